import { ARCHES, efiNames, type ArchInfo } from '../arch.ts';
import { ENTRY_SORT_KEY } from '../boot/entries.ts';
import { SEED_PENDING_MARKER, SITE_ENV_PATH } from '../site/data.ts';
import { STATE_SEED_AREA } from '../disk/layout.ts';
import { composeShellScript } from '../shell/compose.ts';
import { TEMP_SUFFIX } from './boot-state.ts';
import { ROOTFS } from '../release/artifacts.ts';

/**
 * The on-device installer, `/ossify/install.sh` in the installer image: a busybox `sh`
 * script (`device.sh` next to this module, with the constants below assigned at its top and
 * builder/shell/partitions.sh included) that upgrades the system it runs on from the image's payload, with the same steps
 * and the same crash-safety argument as `ossify upgrade` (builder/installer/upgrade.ts):
 *
 *   verify payload (sha256, arch, size) → active slot from /proc/cmdline → delete the other
 *   slot's entries → dd the squashfs into ROOT-<other> (fsync) → read back, compare →
 *   kernel, initrd, release.json onto the ESP under temporary names, compared, renamed →
 *   counted entry under a temporary name → rename to ossify-<other>+N.conf (the switch).
 *
 * With dm-verity (the payload has rootfs.verity and release.json a roothash) the tree goes
 * after the squashfs at the next 4 KiB, the gap is zeroed, both are read back and compared,
 * and the entry pins the root hash, salt (read from the tree's superblock), block count and
 * offset, as entryConf() writes them. A release built with `boot.entries: uki` (the payload has
 * uki-a.efi and uki-b.efi) gets the target slot's unified kernel image as
 * EFI/Linux/ossify-<generation>-<slot>+N.efi instead of a kernel, initrd and .conf entry.
 * A payload with the ESP's shared boot files (systemd-boot<efi suffix>.efi, loader.conf, PK/KEK/db.auth)
 * puts them on the ESP after release.json, as builder/installer/boot-files.ts does; the
 * Secure Boot checks run before anything is written, on certificates matched as bytes (a
 * signed boot loader on a disk whose release enrols no keys is kept: busybox cannot tell
 * which key signed the new one).
 *
 * fleet (docs/fleet.md): a site release (the payload has site.tar) also puts its seed at the
 * start of the STATE partition, after the ESP files and before the entry, the way
 * builder/installer/site-seed.ts does: the first block becomes the pending marker, the rest
 * goes in and is compared, then the seed's own first block. STATE is checked before anything
 * is written: data that is no seed, marker or zeros is refused, and so is another site's seed
 * unless --replace-site. `site [--replace-site]` writes the site data alone (same OS, new site
 * data); it applies at the next boot. A payload without site.tar leaves STATE alone.
 *
 * Here the kernel's vfat driver does the FAT work, so "sync" stands for the editor's ordering
 * points. The entry it writes is byte for byte what entryConf() writes, with the kernel
 * arguments and tries of the release's boot record (release.json `boot`, see
 * builder/boot/release-boot.ts; `--tries` overrides), so an on-device upgrade and an offline
 * one leave the same boot state. A release without the record (made by an older ossify) gets
 * the running slot's kernel arguments and 3 tries, as `ossify upgrade` gives it.
 *
 * Commands: `upgrade [--tries N] [--replace-site]`, `site [--replace-site]`, `verify`, `release`, `files`, `help`. Paths can be
 * redirected for tests: OSSIFY_ROOT (image root; payload in $OSSIFY_ROOT/ossify/payload),
 * OSSIFY_PAYLOAD, OSSIFY_PROC, OSSIFY_SYS, OSSIFY_DEV, OSSIFY_MACHINE (instead of uname -m) and OSSIFY_ESP_DIR (an ESP that is
 * already mounted; otherwise the script mounts it).
 */
/**
 * The architecture table the script reads (`arch_field` in device.sh): a line per
 * architecture, `uname systemd-boot-file removable-path other-names…`.
 */
function archTable(): string {
  return Object.values(ARCHES as Record<string, ArchInfo>)
    .map((a) => {
      const efi = efiNames(a.uname);
      const others = [...new Set([a.deb, a.oci.architecture])].filter((n) => n !== a.uname);
      return [a.uname, efi.systemdBoot, efi.removable, ...others].join(' ');
    })
    .join('\n');
}

export const DEVICE_SCRIPT = composeShellScript(import.meta.url, './device.sh', {
  tmp_suffix: TEMP_SUFFIX,
  seed_marker: SEED_PENDING_MARKER.trimEnd(),
  site_env_path: SITE_ENV_PATH,
  state_seed_area: STATE_SEED_AREA,
  entry_sort_key: ENTRY_SORT_KEY,
  rootfs: ROOTFS,
  arches: archTable(),
});
