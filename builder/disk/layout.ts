import { archInfo } from '../arch.ts';
import { derivedGuid } from '../util/guid.ts';
import { PARTITION_TYPES } from '../formats/gpt.ts';


export interface PartitionSpec {
  label: string;
  typeGuid: string;
  guid: string;
  size: number;
}

export interface DiskLayout {
  diskGuid: string;
  partitions: PartitionSpec[];
}

export const MiB = 1 << 20;

/**
 * STATE's first MiB is the seed area (docs/fleet.md): a site seed never grows past it, it must
 * be zeros for STATE to count as empty, and a full OS's persistent /var (rootfs.os.var: state)
 * is the file system right behind it, so writing a seed never touches /var and /var never
 * hides a seed.
 */
export const STATE_SEED_AREA = MiB;
/** The smallest STATE a persistent /var is made on: the seed area and a 15 MiB ext4 with its journal. */
export const VAR_STATE_MIN = STATE_SEED_AREA + 15 * MiB;

/**
 * The A/B layout: ESP, ROOT-A, ROOT-B (typed for the architecture), STATE. GUIDs are derived from the profile digest and
 * the label, so the same profile always yields the same disk identity.
 */
export function abLayout(opts: { profileDigest: string; arch: string; esp: number; root: number; state: number }): DiskLayout {
  const rootType = archInfo(opts.arch).rootType;
  const part = (label: string, typeGuid: string, size: number): PartitionSpec => ({
    label,
    typeGuid,
    guid: derivedGuid(opts.profileDigest, 'partition', label),
    size,
  });
  return {
    diskGuid: derivedGuid(opts.profileDigest, 'disk'),
    partitions: [
      part('ESP', PARTITION_TYPES.esp, opts.esp),
      part('ROOT-A', rootType, opts.root),
      part('ROOT-B', rootType, opts.root),
      part('STATE', PARTITION_TYPES.linuxData, opts.state),
    ],
  };
}

/** The ESP's FAT volume label. */
export const ESP_FAT_LABEL = 'OSSIFY-ESP';

/**
 * The ESP's FAT volume serial, from the profile digest instead of the clock: the build and
 * every install of its release write the same one.
 */
export function espSerial(digest: string): number {
  return parseInt(digest.replace(/^sha256:/, '').slice(0, 8), 16) >>> 0;
}

/** Whole-disk size: 1 MiB in front for the primary GPT, the partitions, 1 MiB behind for the backup. */
export function diskSizeFor(layout: DiskLayout): number {
  return MiB + layout.partitions.reduce((n, p) => n + Math.ceil(p.size / MiB) * MiB, 0) + MiB;
}
