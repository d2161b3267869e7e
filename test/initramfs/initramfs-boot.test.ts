import { chmod, mkdir, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInitramfs, buildInitramfsTree } from '../../builder/initramfs/index.ts';
import { readContent } from '../../builder/tree/content.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';
import { bootInitramfs, initramfsLines, loadBootKit } from '../helpers/initramfs-qemu.ts';

/**
 * Boots the real Debian cloud kernel with our initramfs under QEMU (TCG, direct kernel
 * boot, no firmware) and checks the /init contract from the outside: the root is found by
 * GPT partition label, mounted, and handed /dev, /proc and /sys; every failure prints one
 * `ossify-initramfs: …; rebooting` line and reboots (QEMU exits thanks to -no-reboot).
 */

const MODULES = ['squashfs', 'virtio_blk', 'virtio_pci', 'vfat', 'nls_cp437', 'nls_ascii', 'nls_iso8859_1', 'nls_utf8'];

let work: string;
let vmlinuz: string;
let initrdGzip: string;
let initrdZstd: string;
let disk: string;

const ROOT_INIT = `#!/bin/busybox sh
bb=/bin/busybox
echo "OSSIFY-ROOT-OK pid=$$ console=$([ -c /dev/console ] && echo yes) proc=$([ -r /proc/cmdline ] && echo yes) sys=$([ -d /sys/class/block ] && echo yes) root=$($bb awk '$2 == "/" { r = $1 " " $3 } END { print r }' /proc/mounts) modules=$($bb cut -d' ' -f1 /proc/modules | $bb sort | $bb tr '\\n' ,)"
$bb poweroff -f
`;

const boot = (initrd: string, append: string, withDisk: boolean) => bootInitramfs({ vmlinuz, initrd, append, ...(withDisk ? { disk } : {}), timeoutSeconds: 180 });

beforeAll(async () => {
  requireTool('qemu-system-x86_64', 'qemu-system-x86');
  requireTool('mksquashfs', 'squashfs-tools');
  requireTool('sfdisk', 'fdisk');
  work = await mkdtemp(join(tmpdir(), 'ossify-boot-'));
  const kit = await loadBootKit(work, MODULES);
  vmlinuz = kit.vmlinuz;
  const tree = buildInitramfsTree({ busybox: kit.busybox, modules: kit.plan, kernelVersion: kit.kernelVersion, epoch: 1_700_000_000 });
  initrdGzip = join(work, 'initrd.gz');
  initrdZstd = join(work, 'initrd.zst');
  await writeFile(initrdGzip, await buildInitramfs(tree, 'gzip'));
  await writeFile(initrdZstd, await buildInitramfs(tree, 'zstd'));

  // ROOT-A: a good root; ROOT-B: a squashfs without /sbin/init; BROKEN: not a squashfs.
  const good = join(work, 'good');
  for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys']) await mkdir(join(good, d), { recursive: true });
  await writeFile(join(good, 'bin/busybox'), await readContent(kit.busybox));
  await chmod(join(good, 'bin/busybox'), 0o755);
  await writeFile(join(good, 'sbin/init'), ROOT_INIT);
  await chmod(join(good, 'sbin/init'), 0o755);
  const noInit = join(work, 'noinit');
  for (const d of ['dev', 'proc', 'sys', 'etc']) await mkdir(join(noInit, d), { recursive: true });
  runOk('mksquashfs', [good, join(work, 'a.sqfs'), '-noappend', '-comp', 'zstd', '-all-root', '-quiet', '-no-progress']);
  runOk('mksquashfs', [noInit, join(work, 'b.sqfs'), '-noappend', '-comp', 'xz', '-all-root', '-quiet', '-no-progress']);
  disk = join(work, 'disk.img');
  await writeFile(disk, '');
  await truncate(disk, 64 << 20);
  runOk('sfdisk', ['-q', disk], {
    input: 'label: gpt\nsize=8MiB, name=ESP\nsize=16MiB, name=ROOT-A\nsize=16MiB, name=ROOT-B\nsize=8MiB, name=BROKEN\n',
  });
  const starts = new Map<string, number>();
  for (const m of runOk('sfdisk', ['-d', disk]).matchAll(/start=\s*(\d+),.*name="([^"]+)"/g)) starts.set(m[2]!, Number(m[1]));
  for (const [label, img] of [['ROOT-A', 'a.sqfs'], ['ROOT-B', 'b.sqfs']] as const) {
    runOk('dd', [`if=${join(work, img)}`, `of=${disk}`, 'bs=512', `seek=${starts.get(label)}`, 'conv=notrunc', 'status=none']);
  }
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('initramfs /init under QEMU', () => {
  it('mounts the partition labelled ossify.root and hands over /dev, /proc, /sys to /sbin/init (zstd initramfs)', async () => {
    const log = await boot(initrdZstd, 'ossify.root=ROOT-A ossify.slot=a panic=5', true);
    expect(initramfsLines(log)).toEqual([expect.stringMatching(/^ossify-initramfs: root ROOT-A is \/dev\/vda2 \(slot a\); 13 modules loaded; starting \/sbin\/init$/)]);
    const ok = /OSSIFY-ROOT-OK (.*)/.exec(log);
    expect(ok, log).not.toBeNull();
    expect(ok![1]).toMatch(/^pid=1 console=yes proc=yes sys=yes root=\/dev\/vda2 squashfs modules=/);
    for (const m of ['squashfs', 'virtio_blk', 'virtio_pci', 'vfat', 'fat', 'nls_cp437', 'nls_ascii']) expect(ok![1]).toContain(`${m},`);
  });

  it('reboots with one line when no partition has the label (gzip initramfs)', async () => {
    const log = await boot(initrdGzip, 'ossify.root=NOPE ossify.rootwait=1', false);
    expect(initramfsLines(log)).toEqual([
      'ossify-initramfs: no partition labelled NOPE after 1s (labels seen: none; modules loaded: 13); rebooting',
    ]);
    expect(log).toMatch(/reboot: Restarting system/);
  });

  it('lists the labels it saw when the wanted one is missing', async () => {
    const log = await boot(initrdGzip, 'ossify.root=ROOT-C ossify.rootwait=1', true);
    expect(initramfsLines(log)).toEqual([
      'ossify-initramfs: no partition labelled ROOT-C after 1s (labels seen: ESP ROOT-A ROOT-B BROKEN; modules loaded: 13); rebooting',
    ]);
  });

  it('reboots when the root has no /sbin/init, or is not a squashfs, or the command line is wrong', async () => {
    expect(initramfsLines(await boot(initrdGzip, 'ossify.root=ROOT-B ossify.slot=b', true))).toEqual([
      'ossify-initramfs: ROOT-B (/dev/vda3) has no /sbin/init; rebooting',
    ]);
    const broken = initramfsLines(await boot(initrdGzip, 'ossify.root=BROKEN', true));
    expect(broken).toEqual(['ossify-initramfs: cannot mount /dev/vda4 (BROKEN) as squashfs; rebooting']);
    expect(initramfsLines(await boot(initrdGzip, 'ossify.slot=c ossify.root=ROOT-A', true))).toEqual([
      'ossify-initramfs: ossify.slot=c is not a or b; rebooting',
    ]);
    expect(initramfsLines(await boot(initrdGzip, 'quiet', false))).toEqual([
      'ossify-initramfs: no ossify.root= on the kernel command line; rebooting',
    ]);
  });
});
