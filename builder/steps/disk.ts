import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { buildEspTree, espBootFiles, type EspSpec } from '../boot/esp.ts';
import { releaseBootOf } from '../boot/release-boot.ts';
import { enrollmentFiles, signWithDb } from '../boot/secureboot/profile.ts';
import { assembleDisk } from '../disk/assemble.ts';
import { abLayout, ESP_FAT_LABEL, espSerial } from '../disk/layout.ts';
import { parseSize } from '../profile/schema.ts';
import { bytesContent, hostFileContent, readContent } from '../tree/content.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import type { Extent } from '../util/extents.ts';
import { baseDigestOf, slotVerity } from './shared.ts';
import { BOOT_ARTIFACTS, bootLoaderArtifact, DISK, KERNEL, ROOTFS, ROOTFS_VERITY, ukiArtifact } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

/** The A/B disk: the ESP (systemd-boot, loader entries or UKIs for slot A), the rootfs (and verity tree) in ROOT-A. */
export const disk = defineStep({
  name: 'disk',
  version: 1,
  reads: ['arch', 'name', 'version', 'kernel.cmdline', 'boot', 'disk', 'rootfs.verity', '$baseDigest', '$epoch'],
  needs: ['systemdBoot', 'secureBoot', 'initramfs'],
  mayUse: ['verity'],
  readsFiles: [KERNEL, ROOTFS, ROOTFS_VERITY, ukiArtifact('a')],
  makes: ['partitions', 'diskExtents'],
  // The installer image carries the ESP's shared boot files, so an install or upgrade from a registry writes what this disk has.
  writes: [...BOOT_ARTIFACTS, DISK],
  // fleet: a site's seed goes at the start of STATE; the disk before it is the same for every site.
  checkpoint: ({ partitions }, p) => (p.site === undefined ? undefined : partitions.find((x) => x.label === 'STATE')?.offset),
  async run({ systemdBoot, secureBoot, initramfs, verity }, env) {
    const { profile: p, loaded, work } = env;
    // verified boot: the slot's entry pins the verity root hash; a UKI replaces kernel + initrd; Secure Boot signs systemd-boot and adds the keys to enrol.
    const v = slotVerity(verity);
    const file = async (name: string) => hostFileContent(join(work, name), (await stat(join(work, name))).size);
    const sb = p.boot.secureBoot;
    const shared: Pick<EspSpec, 'arch' | 'systemdBoot' | 'timeout' | 'secureBoot'> = {
      arch: p.arch,
      systemdBoot: secureBoot ? bytesContent(await signWithDb(await readContent(systemdBoot), secureBoot, sb?.signer), `${bootLoaderArtifact(p.arch)} (signed)`) : systemdBoot,
      timeout: p.boot.timeout,
      ...(secureBoot ? { secureBoot: { enroll: sb?.enroll ?? 'force', auth: enrollmentFiles(secureBoot, baseDigestOf(loaded), loaded.epoch) } } : {}),
    };
    for (const [name, content] of Object.entries(espBootFiles(shared))) if (content) await writeFileAtomic(join(work, name), await readContent(content));
    const esp = buildEspTree({
      ...shared,
      ...(p.boot.entries === 'uki' ? { uki: await file(ukiArtifact('a')) } : { kernel: await file(KERNEL), initramfs: bytesContent(initramfs) }),
      entry: { slot: 'a', generation: 1, name: p.name, version: p.version, cmdline: releaseBootOf(p, loaded.file).cmdline, ...(v ? { verity: v } : {}) },
      epoch: loaded.epoch,
    });
    // fleet: GUIDs and the FAT serial from the base digest: every site of a base has this same disk, its seed aside.
    const layout = abLayout({
      profileDigest: baseDigestOf(loaded),
      arch: p.arch,
      esp: parseSize(p.disk.esp),
      root: parseSize(p.disk.root),
      state: parseSize(p.disk.state),
    });
    const written: Extent[] = [];
    const partitions = await assembleDisk(join(work, DISK), {
      layout,
      written,
      esp: { tree: esp, label: ESP_FAT_LABEL, serial: espSerial(baseDigestOf(loaded)) },
      images: {
        'ROOT-A': [{ path: join(work, ROOTFS), offset: 0 }, ...(verity ? [{ path: join(work, ROOTFS_VERITY), offset: verity.hashOffset }] : [])],
      },
    });
    env.log(`${partitions.length} partitions`);
    return { partitions, diskExtents: written };
  },
});
