import type { Profile } from '../profile/schema.ts';
import { readContent, textContent } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { resolveTreePath } from '../tree/walk.ts';
import { STATE_SEED_AREA } from '../disk/layout.ts';

/**
 * What ossify adds to a full OS root (profile `rootfs.os`, the bootc / Kairos model) and nothing
 * else: the image is read-only and A/B-booted, so
 *
 * - `/usr/lib/ossify/rootfs.env` tells the initramfs which writable mounts to make before
 *   switch_root (tmpfs /run and /tmp, overlays on /etc and /var): no fstab is needed, and the
 *   same contract serves any init;
 * - `/etc/machine-id` is empty: systemd treats the boot as a first boot and makes the id (the
 *   image never carries one machine's identity);
 * - `/efi` and an `efi.mount` for the ESP by GPT partition label, which systemd-bless-boot
 *   needs to rename the counted loader entry;
 * - with `boot.health`, `ossify-health.service`: boot-complete.target requires it, it orders
 *   after the named units and fails (rebooting, unblessed) unless all are active; with
 *   `boot.healthTimeout`, a job still waiting then reboots too.
 */

export const ROOTFS_ENV = 'usr/lib/ossify/rootfs.env';
const UNIT_DIR = 'usr/lib/systemd/system';
const HEALTH_CHECK = 'usr/lib/ossify/health-check';

const file = (root: FileTree, path: string, text: string, mode = 0o644) =>
  root.set(path, { type: 'file', mode, uid: 0, gid: 0, mtime: 0, content: textContent(text, `ossify ${path}`) });

/** IMAGE_ID and IMAGE_VERSION (and the profile digest) added to the image's own os-release, or ossify's when it has none. */
export async function osReleaseText(root: FileTree, own: string, image: { id: string; version: string; digest: string }): Promise<string> {
  const real = resolveTreePath(root, 'etc/os-release') ?? resolveTreePath(root, 'usr/lib/os-release');
  const e = real === undefined ? undefined : root.resolve(real);
  if (!e || e.type !== 'file') return own;
  const ours = new Set(['IMAGE_ID', 'IMAGE_VERSION', 'OSSIFY_PROFILE_DIGEST']);
  const kept = new TextDecoder()
    .decode(await readContent(e.content))
    .split('\n')
    .filter((l) => l.trim() !== '' && !ours.has(l.split('=')[0]!.trim()));
  return [...kept, `IMAGE_ID=${image.id}`, `IMAGE_VERSION=${image.version}`, `OSSIFY_PROFILE_DIGEST=${image.digest}`, ''].join('\n');
}

export function rootfsEnv(os: NonNullable<Profile['rootfs']['os']>): string {
  return [
    '# Read by the ossify initramfs (builder/initramfs/init-script.ts) before switch_root.',
    `OSSIFY_ETC=${os.etc ?? 'overlay'}`,
    `OSSIFY_VAR=${os.var ?? 'tmpfs'}`,
    // where /var's file system starts on STATE: behind the seed area
    ...(os.var === 'state' ? [`OSSIFY_VAR_OFFSET=${STATE_SEED_AREA}`] : []),
    '',
  ].join('\n');
}


const EFI_MOUNT = `# ossify: the ESP, found by its GPT partition label, for systemd-bless-boot.
[Unit]
Description=EFI System Partition
Documentation=man:systemd-bless-boot.service(8)

[Mount]
What=/dev/disk/by-partlabel/ESP
Where=/efi
Type=vfat
Options=umask=0077,nosuid,nodev,noexec
`;

const BLESS_DROP_IN = `# ossify: systemd-bless-boot renames the counted entry on the ESP.
[Unit]
RequiresMountsFor=/efi
`;

const HEALTH_SCRIPT = `#!/bin/sh
# ossify-health.service: every unit named in boot.health must be active, or this boot is not blessed.
bad=
for u in "$@"; do
	state=$(systemctl is-active "$u")
	[ "$state" = active ] || bad="$bad $u=$state"
done
if [ -n "$bad" ]; then
	echo "ossify-health: not healthy:$bad; rebooting unblessed"
	exit 1
fi
echo "ossify-health: healthy: $*"
`;

function healthUnit(units: readonly string[], timeout: number | undefined): string {
  const list = units.join(' ');
  return [
    '# ossify: the boot.health gate. boot-complete.target requires this unit, and systemd-bless-boot',
    '# requires boot-complete.target: a slot on trial is blessed only when these units are active.',
    '[Unit]',
    'Description=ossify health gate (boot.health)',
    'Documentation=man:systemd.special(7)',
    `Wants=${list}`,
    `After=${list}`,
    'Before=boot-complete.target',
    ...(timeout !== undefined ? [`JobTimeoutSec=${timeout}`, 'JobTimeoutAction=reboot'] : []),
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=/${HEALTH_CHECK} ${list}`,
    'StandardOutput=journal+console',
    'FailureAction=reboot',
    '',
  ].join('\n');
}

const BOOT_COMPLETE_DROP_IN = `# ossify: boot.health gates boot-complete.target.
[Unit]
Requires=ossify-health.service
After=ossify-health.service
`;

/** Adds the systemd integration to a full OS root (see the file comment). */
export function addOsIntegration(root: FileTree, p: Profile): void {
  const os = p.rootfs.os;
  if (!os) return;
  file(root, ROOTFS_ENV, rootfsEnv(os));
  file(root, 'etc/machine-id', '', 0o444);
  for (const d of ['efi', 'var', 'etc']) root.ensureDir(d);
  file(root, `${UNIT_DIR}/efi.mount`, EFI_MOUNT);
  file(root, `${UNIT_DIR}/systemd-bless-boot.service.d/ossify.conf`, BLESS_DROP_IN);
  const health = p.boot.health ?? [];
  if (health.length || p.boot.healthTimeout !== undefined) {
    file(root, HEALTH_CHECK, HEALTH_SCRIPT, 0o755);
    file(root, `${UNIT_DIR}/ossify-health.service`, healthUnit(health.length ? health : ['sysinit.target'], p.boot.healthTimeout));
    file(root, `${UNIT_DIR}/boot-complete.target.d/ossify.conf`, BOOT_COMPLETE_DROP_IN);
  }
}
