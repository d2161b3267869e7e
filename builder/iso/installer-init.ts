import { composeShellScript } from '../shell/compose.ts';

/**
 * The installer ISO's `/init`, a busybox `sh` script (`installer-init.sh` next to this
 * module; it takes no constants). systemd-boot on the ISO loads the
 * release's own kernel and initramfs (busybox, the modules that see its disks, their load
 * list), then a small archive with this script, which replaces the release's /init, then the
 * payload archive (builder/iso/payload.ts) under /ossify/install:
 *
 *   disk.map    lines `data OFFSET COUNT FROM` (copy COUNT 64 KiB blocks of disk.data from
 *               block FROM to block OFFSET of the target) and `zero OFFSET COUNT`;
 *   disk.data   the non-zero blocks of the build's disk.raw, its first two sectors zeroed;
 *   mbr.bin, gpt.hdr, gpt.ent   the build's protective MBR, primary GPT header sector and
 *               partition entry array (which does not depend on the disk's size);
 *   release.env NAME, VERSION, DISK_SIZE (bytes the layout needs), DATA_SHA256, LABELS.
 *
 * The ISO's last initrd holds the release's root file system under /live (builder/iso/live-root.ts).
 *
 * Kernel command line: `ossify.install=/dev/<disk>` chooses the target, else the first disk
 * whose first and last MiB are zeros and that is large enough; with neither (or with
 * `ossify.live=1`) the release boots live from a tmpfs copy of /live and no disk is written,
 * the console saying why it did not install. An explicit target that is missing or too small
 * is refused: the machine powers off. `ossify.install.wait=<s>`
 * (default 10) is how long to wait for disks to appear; `ossify.install.hold=<s>` (default
 * 60) how long a failure stays on the screen before the machine powers off.
 *
 * Order of writes: the first two sectors are zeroed (no partition table until the end), the
 * data and zero runs go in, everything is read back and compared, then the backup GPT (entry
 * array and a header for this disk's last sector), the primary header and the protective MBR,
 * each computed for the target's size (the header CRC32 in shell arithmetic). The kernel
 * then re-reads the table and must see every partition label of the layout before the
 * machine reboots into slot A. Any refusal before the first write says so and leaves every
 * disk untouched.
 */
export const INSTALLER_INIT = composeShellScript(import.meta.url, './installer-init.sh');
