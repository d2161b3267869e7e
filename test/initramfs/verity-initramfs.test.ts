import { readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kernelCmdline, verityCmdline, type SlotVerity } from '../../builder/boot/entries.ts';
import { programsTree } from '../../builder/elf/index.ts';
import { computeVerity, slotHashOffset, writeVerityTree } from '../../builder/formats/verity.ts';
import { buildInitramfs, buildInitramfsTree } from '../../builder/initramfs/index.ts';
import { loadInput } from '../../builder/inputs/index.ts';
import type { Input, Program } from '../../builder/profile/schema.ts';
import { readContent } from '../../builder/tree/content.ts';
import { fileHandleSink } from '../../builder/util/sink.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';
import { bootInitramfs, initramfsLines, loadBootKit, TEST_CACHE } from '../helpers/initramfs-qemu.ts';

/**
 * The initramfs /init's dm-verity contract (builder/initramfs/init-script.ts), from the
 * outside: Debian's cloud kernel boots our initramfs directly under QEMU (no firmware), with
 * dmsetup and its libraries from Debian's package (builder/elf closure). A slot whose data
 * matches the root hash on the command line is mounted from /dev/mapper/root; a flipped byte
 * or a wrong root hash restarts the machine (restart_on_corruption); a command line that
 * lacks a number, or an initramfs without dmsetup, ends in the one-line failure and a reboot.
 */

const MODULES = ['squashfs', 'virtio_blk', 'virtio_pci', 'dm_verity'];
const DMSETUP: Program = { path: 'sbin/dmsetup', from: { deb: 'dmsetup', depends: true } as Input };
const VERITYSETUP: Program = { path: 'sbin/veritysetup', from: { deb: 'cryptsetup-bin', depends: true } as Input };

let work: string;
let vmlinuz: string;
let initrd: string;
let initrdNoDmsetup: string;
let initrdVeritysetup: string;
let disk: string;
let verity: SlotVerity;

const ROOT_INIT = `#!/bin/busybox sh
bb=/bin/busybox
echo "OSSIFY-ROOT-OK root=$($bb awk '$2 == "/" { r = $1 " " $3 } END { print r }' /proc/mounts)"
$bb poweroff -f
`;

const boot = (initrd: string, append: string) => bootInitramfs({ vmlinuz, initrd, append, disk, timeoutSeconds: 120 });

beforeAll(async () => {
  requireTool('qemu-system-x86_64', 'qemu-system-x86');
  requireTool('mksquashfs', 'squashfs-tools');
  requireTool('sfdisk', 'fdisk');
  work = await mkdtemp(join(tmpdir(), 'ossify-verity-boot-'));
  const kit = await loadBootKit(work, MODULES);
  vmlinuz = kit.vmlinuz;
  const closure = async (p: Program) => (await programsTree([p], 'initramfs.programs', async (i) => (await loadInput(i, { cacheDir: TEST_CACHE })).tree)).tree;
  const programs = await closure(DMSETUP);
  const spec = { busybox: kit.busybox, modules: kit.plan, kernelVersion: kit.kernelVersion, epoch: 1_700_000_000 };
  initrd = join(work, 'initrd.gz');
  initrdNoDmsetup = join(work, 'initrd-no-dmsetup.gz');
  await writeFile(initrd, await buildInitramfs(buildInitramfsTree({ ...spec, programs }), 'gzip'));
  await writeFile(initrdNoDmsetup, await buildInitramfs(buildInitramfsTree(spec), 'gzip'));
  initrdVeritysetup = join(work, 'initrd-veritysetup.gz');
  await writeFile(initrdVeritysetup, await buildInitramfs(buildInitramfsTree({ ...spec, programs: await closure(VERITYSETUP) }), 'gzip'));

  // ROOT-A: squashfs + zero padding + verity tree; ROOT-B: the same with one byte of the squashfs flipped.
  const root = join(work, 'root');
  for (const d of ['bin', 'sbin', 'dev', 'proc', 'sys']) await mkdir(join(root, d), { recursive: true });
  await writeFile(join(root, 'bin/busybox'), await readContent(kit.busybox));
  await chmod(join(root, 'bin/busybox'), 0o755);
  await writeFile(join(root, 'sbin/init'), ROOT_INIT);
  await chmod(join(root, 'sbin/init'), 0o755);
  const sqfs = join(work, 'root.sqfs');
  runOk('mksquashfs', [root, sqfs, '-noappend', '-comp', 'gzip', '-all-root', '-quiet', '-no-progress', '-nopad']);
  const size = statSync(sqfs).size;
  const v = await computeVerity(sqfs, { hashOffset: slotHashOffset(size) });
  verity = { rootHash: v.rootHash, salt: v.salt, dataBlocks: v.dataBlocks, hashOffset: v.hashOffset };

  disk = join(work, 'disk.img');
  await writeFile(disk, '');
  await truncate(disk, 32 << 20);
  runOk('sfdisk', ['-q', disk], { input: 'label: gpt\nsize=4MiB, name=ESP\nsize=12MiB, name=ROOT-A\nsize=12MiB, name=ROOT-B\n' });
  const starts = new Map<string, number>();
  for (const m of runOk('sfdisk', ['-d', disk]).matchAll(/start=\s*(\d+),.*name="([^"]+)"/g)) starts.set(m[2]!, Number(m[1]) * 512);
  const data = readFileSync(sqfs);
  const fh = await open(disk, 'r+');
  try {
    for (const label of ['ROOT-A', 'ROOT-B']) {
      const base = starts.get(label)!;
      const bytes = Buffer.from(data);
      if (label === 'ROOT-B') bytes[1500]! ^= 0x10;
      await fh.write(bytes, 0, bytes.length, base);
      await writeVerityTree(fileHandleSink(fh), v, base);
    }
  } finally {
    await fh.close();
  }
}, 300_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('initramfs /init with dm-verity', () => {
  it('maps the slot with dmsetup (or veritysetup) and mounts the squashfs from /dev/mapper/root', async () => {
    const log = await boot(initrd, `${kernelCmdline('a', 'panic=5', verity)}`);
    expect(initramfsLines(log), log.slice(-3000)).toEqual([
      `ossify-initramfs: root ROOT-A (/dev/vda2) is verified by dm-verity, root hash ${verity.rootHash}`,
      expect.stringMatching(/^ossify-initramfs: root ROOT-A is \/dev\/mapper\/root \(slot a\); \d+ modules loaded; starting \/sbin\/init$/),
    ]);
    expect(log).toMatch(/OSSIFY-ROOT-OK root=\/dev\/mapper\/root squashfs/);
    // With veritysetup instead of dmsetup: the same numbers, no superblock read from the disk.
    const vs = await boot(initrdVeritysetup, `${kernelCmdline('a', 'panic=5', verity)}`);
    expect(initramfsLines(vs)[0], vs.slice(-3000)).toBe(`ossify-initramfs: root ROOT-A (/dev/vda2) is verified by dm-verity, root hash ${verity.rootHash}`);
    expect(vs).toMatch(/OSSIFY-ROOT-OK root=\/dev\/mapper\/root squashfs/);
  }, 150_000);

  it('restarts the machine when a block does not match: a flipped byte, or a root hash that is not the slot’s', async () => {
    const flipped = await boot(initrd, `ossify.root=ROOT-B ossify.slot=b ${verityCmdline(verity)}`);
    expect(flipped).toMatch(/device-mapper: verity: [^\n]*data block \d+ is corrupted/);
    expect(flipped).toMatch(/reboot: Restarting system with command 'dm-verity device corrupted'/);
    expect(flipped).not.toContain('OSSIFY-ROOT-OK');
    const wrong = await boot(initrd, `ossify.root=ROOT-A ${verityCmdline({ ...verity, rootHash: 'ab'.repeat(32) })}`);
    expect(wrong).toMatch(/reboot: Restarting system with command 'dm-verity device corrupted'/);
    expect(wrong).not.toContain('OSSIFY-ROOT-OK');
  }, 150_000);

  it('refuses an incomplete or inconsistent command line, and an initramfs without dmsetup, with one line and a reboot', async () => {
    const cases: [string, string, string][] = [
      [initrd, `ossify.root=ROOT-A ossify.verity=${verity.rootHash} ossify.verity.blocks=${verity.dataBlocks} ossify.verity.hashoffset=${verity.hashOffset}`, 'ossify.verity= is set but ossify.verity.salt= is missing'],
      [initrd, `ossify.root=ROOT-A ${verityCmdline({ ...verity, hashOffset: 4096 })}`, `ossify.verity.hashoffset=4096 lies inside the ${verity.dataBlocks} data blocks`],
      [initrdNoDmsetup, `ossify.root=ROOT-A ${verityCmdline(verity)}`, 'ossify.verity= is set but this initramfs has no dmsetup (add it to initramfs.programs)'],
    ];
    for (const [image, append, why] of cases) {
      const log = await boot(image, append);
      expect(initramfsLines(log), log.slice(-2000)).toEqual([`ossify-initramfs: ${why}; rebooting`]);
      expect(log).not.toContain('OSSIFY-ROOT-OK');
    }
  }, 200_000);
});
