import { copyFileSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeLayout } from '../../builder/release/installer-image.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { buildProfile, buildRecord, diskStatus, ossifyOk, PROJECT_ROOT, slotOf } from '../helpers/cli.ts';
import { requireTool, run } from '../helpers/oracle.ts';

/**
 * dm-verity end to end: the A/B test images (profiles/test/ab-*.yaml extend the
 * default profile, which turns rootfs.verity on). veritysetup, written by nobody here, judges
 * the slots ossify writes; QEMU proves the initramfs maps the slot through dm-verity and that
 * a slot with one flipped byte is refused until boot counting falls back to the other slot.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const BOOT_TIMEOUT = 150;
let out: string;
let v1: string;
let v2: string;

const build = (profile: string) => buildProfile(`profiles/test/${profile}.yaml`, out, CACHE);
const cli = (args: string[]) => ossifyOk(args);
const record = buildRecord;
const status = diskStatus;

/** Copies `length` bytes at `offset` of a disk into a file of their own (a partition image). */
async function extract(disk: string, offset: number, length: number, to: string): Promise<void> {
  const src = await open(disk, 'r');
  const dst = await open(to, 'w');
  try {
    const buf = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < length; pos += buf.length) {
      const n = Math.min(buf.length, length - pos);
      const { bytesRead } = await src.read(buf, 0, n, offset + pos);
      await dst.write(buf, 0, bytesRead, pos);
    }
  } finally {
    await src.close();
    await dst.close();
  }
}

async function flipByte(disk: string, at: number): Promise<void> {
  const fh = await open(disk, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0]! ^= 0x20;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

/** `veritysetup verify` on a slot's bytes (squashfs, padding, superblock + tree) with a root hash. */
async function veritysetupVerify(disk: string, part: { offset: number }, v: { hashOffset: number }, treeSize: number, roothash: string, name: string) {
  const img = join(out, `${name}.img`);
  await extract(disk, part.offset, v.hashOffset + treeSize, img);
  const r = run('veritysetup', ['verify', img, img, roothash, `--hash-offset=${v.hashOffset}`]);
  await rm(img);
  return r;
}

beforeAll(async () => {
  requireTool('qemu-system-x86_64', 'qemu-system-x86');
  requireTool('veritysetup', 'cryptsetup-bin');
  out = await mkdtemp(join(tmpdir(), 'ossify-e2e-verity-'));
  v1 = await build('ab-v1');
  v2 = await build('ab-v2');
}, 600_000);

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

describe('dm-verity root slots', () => {
  it('the build records the tree; veritysetup verify accepts ROOT-A of disk.raw with the reported root hash', async () => {
    const b = record(v1);
    expect(b.verity).toMatchObject({ roothash: expect.stringMatching(/^[0-9a-f]{64}$/), salt: expect.stringMatching(/^[0-9a-f]{64}$/), dataBlockSize: 4096, hashBlockSize: 4096, algorithm: 'sha256' });
    const v = b.verity!;
    expect(v.hashOffset).toBe(Math.ceil(b.artifacts['rootfs.squashfs']!.size / 4096) * 4096);
    expect(v.dataBlocks).toBe(v.hashOffset / 4096);
    const tree = b.artifacts['rootfs.verity']!;
    expect(tree.size % 4096).toBe(0);
    // The installer image's release.json pins the same root and ships the tree.
    const image = await describeLayout(join(v1, 'oci'));
    expect(image.release.roothash).toBe(v.roothash);
    expect(image.release.artifacts['rootfs.verity']).toEqual({ sha256: tree.sha256.replace(/^sha256:/, ''), size: tree.size });

    const rootA = b.partitions.find((p) => p.label === 'ROOT-A')!;
    const ok = await veritysetupVerify(join(v1, 'disk.raw'), rootA, v, tree.size, v.roothash, 'root-a');
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    const wrong = await veritysetupVerify(join(v1, 'disk.raw'), rootA, v, tree.size, record(v2).verity!.roothash, 'root-a-wrong');
    expect(wrong.code).not.toBe(0);

    // The slot's entry carries the root hash and the numbers the initramfs maps it with.
    const s = await status(join(v1, 'disk.raw'));
    expect(slotOf(s, 'a').verity).toEqual({ roothash: v.roothash, hashOffset: v.hashOffset, dataBlocks: v.dataBlocks, verified: true });
  });

  it('an upgraded slot with one flipped byte in its squashfs is refused three times, then the previous slot boots', async () => {
    const disk = join(out, 'fallback.raw');
    copyFileSync(join(v1, 'disk.raw'), disk);
    await cli(['upgrade', '--from', v2, '--disk', disk]);
    const b2 = record(v2);
    const before = await status(disk);
    expect(slotOf(before, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'trying', triesLeft: 3 }, release: { version: '2.0.0', verified: true }, verity: { roothash: b2.verity!.roothash, verified: true } });

    // What the installer wrote is what veritysetup accepts, with v2's root hash.
    const rootB = before.partitions.find((p) => p.label === 'ROOT-B')!;
    const ok = await veritysetupVerify(disk, rootB, b2.verity!, b2.artifacts['rootfs.verity']!.size, b2.verity!.roothash, 'root-b');
    expect(ok.code, ok.stderr).toBe(0);

    // One byte inside the squashfs (in its first block, which every mount reads).
    await flipByte(disk, rootB.offset + 1000);
    const bad = await veritysetupVerify(disk, rootB, b2.verity!, b2.artifacts['rootfs.verity']!.size, b2.verity!.roothash, 'root-b-bad');
    expect(bad.code).not.toBe(0);
    const flipped = await status(disk);
    expect(slotOf(flipped, 'b').verity?.verified).toBe(false);
    expect(flipped.warnings.join('\n')).toMatch(/slot b: ROOT-B does not hash to the verity root its entry pins/);

    const r = await runDisk({ disk, expect: /OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a/, timeout: BOOT_TIMEOUT });
    const tail = r.log.slice(-6000);
    expect(r.matched, tail).toBe(true);
    // Each try: the kernel reads the corrupted block through dm-verity and restarts the machine.
    expect(r.log.match(/device-mapper: verity: [^\n]*data block \d+ is corrupted/g)?.length, tail).toBe(3);
    expect(r.log.match(/reboot: Restarting system with command 'dm-verity device corrupted'/g)?.length, tail).toBe(3);
    expect(r.log).not.toMatch(/OSSIFY-BOOT name=ossify-ab version=2\.0\.0/);

    const after = await status(disk);
    expect(after.next).toBe('a');
    expect(slotOf(after, 'b')).toMatchObject({ bootsNext: false, entry: { state: 'bad', triesLeft: 0, triesDone: 3, file: 'ossify-b+0-3.conf' } });
    expect(slotOf(after, 'a')).toMatchObject({ bootsNext: true, entry: { state: 'good' }, verity: { roothash: record(v1).verity!.roothash, verified: true } });
  }, 300_000);
});
