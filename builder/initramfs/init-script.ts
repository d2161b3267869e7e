import { composeShellScript } from '../shell/compose.ts';

/**
 * The initramfs `/init`, a busybox `sh` script: `init.sh` next to this module, with the
 * partition lookup shared with the on-device installer (builder/shell/partitions.sh)
 * included. It takes no constants (the module list lives in /etc/ossify/modules), so it can
 * be reviewed as a whole. Contract with the rest of ossify:
 *
 * - kernel command line: `ossify.root=<GPT partition label>` (required),
 *   `ossify.slot=<a|b>` (checked, informational), `ossify.rootwait=<seconds>` (default 10);
 * - dm-verity (builder/boot/entries.ts verityCmdline): `ossify.verity=<root hash, 64 hex>` turns
 *   it on and then `ossify.verity.salt=<hex>`, `ossify.verity.blocks=<data blocks of 4096>` and
 *   `ossify.verity.hashoffset=<bytes from the partition start to the verity superblock>` are
 *   required. The initramfs trusts nothing on the partition: every number comes from the
 *   command line (inside the signed UKI under Secure Boot), and it maps
 *   `/dev/mapper/root` with `dmsetup create` (a dmsetup from initramfs.programs, no udev:
 *   DM_DISABLE_UDEV=1) and the table verityTable() documents, or, when the initramfs has
 *   veritysetup instead, `veritysetup open --no-superblock` with the same numbers; either way
 *   with `restart_on_corruption`:
 *   a block that does not match its hash restarts the machine, which counts as a failed try;
 *   the squashfs is then mounted from the mapped device;
 * - the root partition holds a squashfs with `/sbin/init` and empty `/dev`, `/proc`, `/sys`
 *   directories, onto which the initramfs moves its mounts;
 * - every failure prints one line `ossify-initramfs: <reason>; rebooting` and reboots, never
 *   a shell: systemd-boot's boot counting only works if a bad slot ends in a reboot. For the
 *   same reason, when the command line sets no `panic=`, a panic (e.g. /sbin/init dying)
 *   reboots after 10 s instead of hanging.
 *
 * Applets are called as `$bb <applet>` because the image has no applet symlinks, and must
 * not have /bin/sh: the kernel falls back to running /bin/sh when /init cannot run.
 */
export const INIT_SCRIPT = composeShellScript(import.meta.url, './init.sh');
