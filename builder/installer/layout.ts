import { readGpt, SECTOR } from '../formats/gpt.ts';
import { rootLabel, SLOTS, type Slot } from '../boot/entries.ts';
import { archByRootType } from '../arch.ts';
import { PARTITION_TYPES } from '../formats/gpt.ts';
import { InputError } from '../util/errors.ts';
import { openDisk, type Disk } from './disk.ts';

export interface DiskPartition {
  number: number;
  label: string;
  typeGuid: string;
  guid: string;
  offset: number;
  size: number;
}

export interface OssifyLayout {
  diskGuid: string;
  partitions: DiskPartition[];
  esp: DiskPartition;
  roots: Record<Slot, DiskPartition>;
  state: DiskPartition | undefined;
  /** The architecture the root partitions are typed for. */
  arch: string;
  /** False when the backup GPT is damaged (reported, not fatal: the primary is used). */
  backupValid: boolean;
}

/**
 * Reads the GPT and checks it is an ossify A/B layout: an ESP and two root partitions of
 * one architecture, found by label. Anything else is refused before a byte is written.
 */
export async function probeLayout(disk: Disk): Promise<OssifyLayout> {
  const notOssify = (why: string) =>
    new InputError(`${disk.path} is not an ossify disk: ${why}`, { hint: 'use ossify install for a blank disk' });
  if (disk.size < 34 * SECTOR * 2) throw notOssify(`it is only ${disk.size} bytes`);
  let gpt;
  try {
    gpt = await readGpt((offset, length) => disk.read(offset, length), { diskSize: disk.size });
  } catch (err) {
    throw notOssify(`no valid GPT (${(err as Error).message})`);
  }
  const partitions: DiskPartition[] = gpt.partitions.map((p) => ({
    number: p.number,
    label: p.name,
    typeGuid: p.typeGuid.toUpperCase(),
    guid: p.guid.toUpperCase(),
    offset: p.firstLba * SECTOR,
    size: (p.lastLba - p.firstLba + 1) * SECTOR,
  }));
  const byLabel = (label: string) => {
    const found = partitions.filter((p) => p.label === label);
    if (found.length > 1) throw notOssify(`${found.length} partitions are labelled ${label}`);
    return found[0];
  };
  const esp = byLabel('ESP');
  if (!esp) throw notOssify('no partition labelled ESP');
  if (esp.typeGuid !== PARTITION_TYPES.esp) throw notOssify(`partition ${esp.number} (ESP) is not of the EFI System Partition type`);
  const roots = {} as Record<Slot, DiskPartition>;
  for (const slot of SLOTS) {
    const p = byLabel(rootLabel(slot));
    if (!p) throw notOssify(`no partition labelled ${rootLabel(slot)}`);
    roots[slot] = p;
  }
  if (roots.a.typeGuid !== roots.b.typeGuid) throw notOssify('ROOT-A and ROOT-B have different partition types');
  const arch = archByRootType(roots.a.typeGuid)?.uname;
  if (!arch) throw notOssify(`ROOT-A has type ${roots.a.typeGuid}, which is no known root partition type`);
  return { diskGuid: gpt.diskGuid, partitions, esp, roots, state: byLabel('STATE'), arch, backupValid: gpt.backupValid };
}

/** The architecture an ossify disk's root partitions are typed for; undefined for any other disk. */
export async function diskArch(path: string): Promise<string | undefined> {
  const disk = await openDisk(path, { write: false }).catch(() => undefined);
  if (!disk) return undefined;
  try {
    return (await probeLayout(disk).catch(() => undefined))?.arch;
  } finally {
    await disk.close();
  }
}
