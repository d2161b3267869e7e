import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { entryConf, ukiFileName, type Slot, type SlotVerity } from '../../builder/boot/entries.ts';
import { computeVerity, slotHashOffset } from '../../builder/formats/verity.ts';
import { openFatEditor } from '../../builder/formats/fat/mutate.ts';
import { compareEntries, readBootState, type SlotEntry } from '../../builder/installer/boot-state.ts';
import { DEVICE_SCRIPT } from '../../builder/installer/device-script.ts';
import { openDisk, partitionIo } from '../../builder/installer/disk.ts';
import { install } from '../../builder/installer/install.ts';
import { probeLayout } from '../../builder/installer/layout.ts';
import { openReleaseDir, type ReleaseSource } from '../../builder/installer/release.ts';
import { rollback } from '../../builder/installer/rollback.ts';
import { diskStatus } from '../../builder/installer/status.ts';
import { CRASH_ENV } from '../../builder/installer/steps.ts';
import { upgrade } from '../../builder/installer/upgrade.ts';
import { encodeRelease } from '../../builder/release/release-json.ts';
import { pushBuild } from '../../builder/release/push.ts';
import { fakeStaticElf, startRegistry } from '../helpers/registry.ts';
import { ossify } from '../helpers/cli.ts';
import { diskImages, diskOracles, fakeSquashfs, noise, readRange, renameEntry, sha, writeBuildOutput } from '../helpers/installer-fixtures.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

/**
 * install / upgrade / status / rollback on disk image files, with small synthetic releases
 * (no kernel build, no QEMU): refusals, the write fence around the active slot, boot-count
 * states, the crash matrix through OSSIFY_TEST_CRASH_AT, and the on-device script run by the
 * host's busybox against a fake /proc, /sys and /dev. test/e2e/ab.test.ts boots the real thing.
 */

const MiB = 1 << 20;
const EPOCH = 1_700_000_000;
const work = tempDir('installer');
afterAll(() => work.cleanup());

interface FakeRelease {
  version: string;
  arch?: string;
  seed: number;
  rootfsBytes?: number;
}

/** A build output as `ossify build` writes it, minus disk.raw: what --from takes. */
function fakeRelease(r: FakeRelease): string {
  const dir = join(work.path, `release-${r.version}-${r.seed}`);
  mkdirSync(dir, { recursive: true });
  const files: Record<string, Buffer> = {
    'rootfs.squashfs': fakeSquashfs(r.rootfsBytes ?? 60_000 + r.seed, r.seed),
    vmlinuz: noise(150_000 + r.seed, r.seed + 1),
    'initramfs.img': noise(40_000 + r.seed, r.seed + 2),
  };
  writeBuildOutput(dir, files, { name: 'fake-os', version: r.version, arch: r.arch ?? 'x86_64', profileDigest: `sha256:${sha(Buffer.from('fake profile'))}`, epoch: EPOCH });
  return dir;
}

let v1: string;
let v2: string;
let v3: string;
let sdboot: string;
const CMDLINE = 'console=ttyS0 panic=5';

const { installFresh, copyDisk } = diskImages(work.path, () => ({ systemdBoot: sdboot, cmdline: CMDLINE }));

async function up(disk: string, from: string, extra: Partial<Parameters<typeof upgrade>[0]> = {}) {
  return upgrade({ disk, source: await openReleaseDir(from), ...extra });
}

async function espCheck(disk: string) {
  const d = await openDisk(disk, { write: false });
  try {
    const layout = await probeLayout(d);
    const esp = await openFatEditor(partitionIo(d, layout.esp));
    return { problems: await esp.check(), state: await readBootState(esp), layout };
  } finally {
    await d.close();
  }
}

/** fsck.fat -n on the ESP (with nothing to say) and sgdisk -v on the disk. */
const oracles = (disk: string) => diskOracles(disk, join(work.path, 'esp-check.img'), { quiet: true });

async function regionHashes(disk: string, ranges: { offset: number; size: number }[]): Promise<string[]> {
  const fh = await open(disk, 'r');
  try {
    const out: string[] = [];
    for (const r of ranges) {
      const b = Buffer.alloc(r.size);
      await fh.read(b, 0, r.size, r.offset);
      out.push(sha(b));
    }
    return out;
  } finally {
    await fh.close();
  }
}

beforeAll(() => {
  v1 = fakeRelease({ version: '1.0.0', seed: 11 });
  v2 = fakeRelease({ version: '2.0.0', seed: 22 });
  v3 = fakeRelease({ version: '3.0.0', seed: 33 });
  sdboot = join(work.path, 'systemd-bootx64.efi');
  writeFileSync(sdboot, noise(80_000, 99));
});

describe('install', () => {
  it('makes a disk that status, sgdisk and fsck.fat accept, the same bytes every time', async () => {
    const a = await installFresh('install-a', v1);
    const b = await installFresh('install-b', v1);
    expect(sha(readFileSync(a))).toBe(sha(readFileSync(b)));
    await oracles(a);
    const s = await diskStatus(a);
    expect(s.next).toBe('a');
    expect(s.partitions.map((p) => p.label)).toEqual(['ESP', 'ROOT-A', 'ROOT-B', 'STATE']);
    const [sa, sb] = s.slots;
    expect(sa!.entry).toMatchObject({ file: 'ossify-a.conf', state: 'good', generation: 1 });
    expect(sa!.release).toMatchObject({ name: 'fake-os', version: '1.0.0', recordedIn: 'entry-title' });
    // No release.json for a freshly built slot: the digest is read from the partition.
    expect(sa!.release!.digest).toBe(`sha256:${sha(readFileSync(join(v1, 'rootfs.squashfs')))}`);
    expect(sb!.entry).toBeUndefined();
    expect(sb!.release).toBeUndefined();
  });

  it('writes a blank existing disk in place with the same bytes as a new image', async () => {
    const fresh = await installFresh('fresh', v1);
    const blank = join(work.path, 'blank.raw');
    writeFileSync(blank, Buffer.alloc(0));
    await truncate(blank, readFileSync(fresh).length);
    await install({ disk: blank, source: await openReleaseDir(v1), cacheDir: work.path, systemdBoot: sdboot, cmdline: CMDLINE });
    expect(sha(readFileSync(blank))).toBe(sha(readFileSync(fresh)));
  });

  it('on a disk full of old bytes, clears STATE\'s seed area and the head of the /var file system behind it', async () => {
    const fresh = await installFresh('fresh-noise', v1);
    const used = join(work.path, 'used.raw');
    // 8 MiB more than the release's disk: STATE grows to fill it.
    writeFileSync(used, noise(readFileSync(fresh).length + 8 * MiB, 77));
    await install({ disk: used, source: await openReleaseDir(v1), cacheDir: work.path, systemdBoot: sdboot, cmdline: CMDLINE, force: true });
    const state = (await diskStatus(used)).partitions.find((p) => p.label === 'STATE')!;
    expect(state.size).toBeGreaterThan(8 * MiB);
    // A reinstalled machine starts with no site data and an empty /var (rootfs.os.var: state makes it anew).
    expect((await readRange(used, state.offset, 2 * MiB)).every((b) => b === 0)).toBe(true);
    expect((await readRange(used, state.offset + 2 * MiB, 4096)).some((b) => b !== 0)).toBe(true);
    expect((await diskStatus(used)).var).toBeUndefined();
    // What the first boot of a rootfs.os.var: state image makes there (the initramfs runs mke2fs on a dm-linear map).
    needTool('mke2fs', 'e2fsprogs');
    const fsBytes = state.size - MiB;
    const r = run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-L', 'ossify-var', '-E', `offset=${state.offset + MiB}`, used, String(fsBytes / 4096)]);
    expect(r.code, r.stderr).toBe(0);
    const s = await diskStatus(used);
    expect(s.var).toMatchObject({ filesystem: 'ext4', size: fsBytes, label: 'ossify-var' });
    expect(s.site).toEqual({ state: 'empty' });
    expect((await ossify(['status', '--disk', used])).stdout).toMatch(/^var: {5}ext4 on STATE, \d+ MiB, label ossify-var$/m);
  });

  it('lays out a bigger disk with the rest going to STATE', async () => {
    const disk = join(work.path, 'sized.raw');
    const r = await ossify(['install', '--from', v1, '--disk', disk, '--size', '64M', '--systemd-boot', sdboot, '--cmdline', CMDLINE, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ size: 64 * MiB, slot: 'a' });
    const s = await diskStatus(disk);
    expect(s.partitions.find((p) => p.label === 'STATE')!.size).toBe(64 * MiB - 2 * MiB - 34 * MiB - 4 * MiB);
    await oracles(disk);
  });

  it('refuses, with exit code 2, what it must not do', async () => {
    const disk = await installFresh('refusals', v1);
    const before = sha(readFileSync(disk));
    const cases: [string[], RegExp][] = [
      [['install', '--from', v1, '--disk', disk, '--systemd-boot', sdboot], /already holds an ossify installation/],
      [['install', '--from', fakeRelease({ version: '9', arch: 'aarch64', seed: 4 }), '--disk', join(work.path, 'arch.raw'), '--systemd-boot', sdboot], /built for aarch64/],
      [['install', '--from', fakeRelease({ version: '9', seed: 5, rootfsBytes: 3 * MiB }), '--disk', join(work.path, 'big.raw'), '--systemd-boot', sdboot], /needs a \d+-byte root slot/],
      [['upgrade', '--from', fakeRelease({ version: '9', seed: 5, rootfsBytes: 3 * MiB }), '--disk', disk], /needs a \d+-byte root slot/],
      [['upgrade', '--from', fakeRelease({ version: '9', arch: 'aarch64', seed: 4 }), '--disk', disk], /built for aarch64, but the disk is x86_64/],
      [['upgrade', '--image', '127.0.0.1:5999/ossify/os:2.0.0', '--disk', disk], /has no digest/],
      [['upgrade', '--image', '127.0.0.1:5999/ossify/os@sha256:1234', '--disk', disk], /invalid image reference/],
      [['upgrade', '--from', v2, '--image', 'x', '--disk', disk], /exactly one of --image/],
      [['upgrade', '--from', v2, '--disk', join(work.path, 'nope.raw')], /does not exist/],
      [['upgrade', '--from', v2, '--disk', sdboot], /not an ossify disk: no valid GPT/],
      [['status', '--disk', sdboot], /not an ossify disk/],
      [['rollback', '--disk', disk], /slot b has no boot entry/],
      [['upgrade', '--from', v2, '--disk', disk, '--tries', '0'], /--tries must be/],
    ];
    for (const [args, msg] of cases) {
      const r = await ossify(args);
      expect(r.stderr, args.join(' ')).toMatch(msg);
      expect(r.exitCode, `${args.join(' ')}\n${r.stderr}`).toBe(2);
    }
    const tampered = fakeRelease({ version: '2.0.0', seed: 6 });
    writeFileSync(join(tampered, 'vmlinuz'), noise(150_006, 0));
    const r = await ossify(['upgrade', '--from', tampered, '--disk', disk]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/vmlinuz has sha256 [0-9a-f]{64}, the release says [0-9a-f]{64}: digest mismatch/);
    expect(sha(readFileSync(disk))).toBe(before);
  });

  it('refuses a disk with a foreign partition table unless forced', async () => {
    needTool('sgdisk', 'gdisk');
    const disk = join(work.path, 'foreign.raw');
    await writeFile(disk, Buffer.alloc(0));
    await truncate(disk, 48 * MiB);
    expect(run('sgdisk', ['-n', '1:2048:+10M', '-t', '1:8300', disk]).code).toBe(0);
    const up = await ossify(['upgrade', '--from', v2, '--disk', disk]);
    expect(up.exitCode).toBe(2);
    expect(up.stderr).toMatch(/not an ossify disk: no partition labelled ESP/);
    const inst = await ossify(['install', '--from', v1, '--disk', disk, '--systemd-boot', sdboot]);
    expect(inst.exitCode).toBe(2);
    expect(inst.stderr).toMatch(/has a partition table \(1 partitions\)/);
    const forced = await ossify(['install', '--from', v1, '--disk', disk, '--systemd-boot', sdboot, '--cmdline', CMDLINE, '--force']);
    expect(forced.exitCode, forced.stderr).toBe(0);
    await oracles(disk);
    expect((await diskStatus(disk)).next).toBe('a');
  });
});

describe('upgrade', () => {
  it('writes only the ESP and the other slot, and the new slot boots next on trial', async () => {
    const disk = await installFresh('upgrade', v1);
    const { layout } = await espCheck(disk);
    const fenced = [
      { offset: 0, size: layout.esp.offset },
      layout.roots.a,
      { offset: layout.roots.b.offset + layout.roots.b.size, size: readFileSync(disk).length - layout.roots.b.offset - layout.roots.b.size },
    ];
    const before = await regionHashes(disk, fenced);
    const r = await up(disk, v2);
    expect(r).toMatchObject({ slot: 'b', entryFile: 'ossify-b+3.conf', generation: 2, alreadyInstalled: false });
    expect(await regionHashes(disk, fenced)).toEqual(before);
    await oracles(disk);
    const s = await diskStatus(disk, { verify: true });
    expect(s.next).toBe('b');
    expect(s.bootOrder).toEqual(['ossify-b+3.conf', 'ossify-a.conf']);
    expect(s.slots[1]).toMatchObject({
      slot: 'b',
      bootsNext: true,
      entry: { file: 'ossify-b+3.conf', state: 'trying', triesLeft: 3, triesDone: 0, generation: 2, title: 'fake-os 2.0.0 (slot b)' },
      release: { name: 'fake-os', version: '2.0.0', recordedIn: 'release.json', verified: true, digest: `sha256:${sha(readFileSync(join(v2, 'rootfs.squashfs')))}` },
    });
    expect(s.warnings).toEqual([]);
    // The entry is entryConf's, with the kernel arguments of the slot it upgraded from.
    const { state } = await espCheck(disk);
    expect(state.slots.b.entry!.text).toBe(entryConf({ slot: 'b', generation: 2, name: 'fake-os', version: '2.0.0', cmdline: CMDLINE }));
  });

  it('stops at "already installed" when rerun, refuses to overwrite the fallback while on trial', async () => {
    const disk = await installFresh('rerun', v1);
    await up(disk, v2);
    const after = sha(readFileSync(disk));
    expect(await up(disk, v2)).toMatchObject({ alreadyInstalled: true, slot: 'b' });
    expect(sha(readFileSync(disk))).toBe(after);
    const r = await ossify(['upgrade', '--from', v3, '--disk', disk]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/slot b \(2\.0\.0\) is still on trial \(3 tries left\); upgrading now would overwrite slot a/);
    expect(sha(readFileSync(disk))).toBe(after);
    const forced = await ossify(['upgrade', '--from', v3, '--disk', disk, '--force', '--tries', '5', '--json']);
    expect(forced.exitCode, forced.stderr).toBe(0);
    expect(JSON.parse(forced.stdout)).toMatchObject({ slot: 'a', entryFile: 'ossify-a+5.conf', generation: 3 });
  });

  it('reads every boot-counting state systemd-boot and the blessing init leave', async () => {
    const disk = await installFresh('counting', v1);
    await up(disk, v2);
    await renameEntry(disk, 'ossify-b+3.conf', 'ossify-b+2-1.conf');
    let s = await diskStatus(disk);
    expect(s.slots[1]!.entry).toMatchObject({ state: 'trying', triesLeft: 2, triesDone: 1 });
    expect(s.next).toBe('b');
    await renameEntry(disk, 'ossify-b+2-1.conf', 'ossify-b+0-3.conf');
    s = await diskStatus(disk);
    expect(s.slots[1]!.entry).toMatchObject({ state: 'bad', triesLeft: 0, triesDone: 3 });
    expect(s.next).toBe('a');
    expect(s.bootOrder).toEqual(['ossify-a.conf', 'ossify-b+0-3.conf']);
    // A bad slot is the one the next upgrade writes.
    expect(await up(disk, v3)).toMatchObject({ slot: 'b', generation: 3 });
    await renameEntry(disk, 'ossify-b+3.conf', 'ossify-b.conf');
    s = await diskStatus(disk);
    expect(s.slots[1]!.entry).toMatchObject({ state: 'good', generation: 3 });
    expect(s.slots[1]!.release!.version).toBe('3.0.0');
    expect(s.next).toBe('b');
    // Blessed: now slot a (1.0.0) is the one an upgrade overwrites.
    expect(await up(disk, v2)).toMatchObject({ slot: 'a', generation: 4 });
    await oracles(disk);
  });

  it('orders entries the way systemd-boot 252 does', () => {
    const e = (file: string, version: string, counting: SlotEntry['counting']): SlotEntry => ({ file, path: `loader/entries/${file}`, kind: 'type1', counting, version, title: undefined, generation: 0, sortKey: 'ossify', options: '', extraCmdline: '', text: '' });
    const sorted = (xs: SlotEntry[]) => [...xs].sort(compareEntries).map((x) => x.file);
    expect(sorted([e('ossify-a.conf', '1-1.0.0', { state: 'good' }), e('ossify-b+3.conf', '2-2.0.0', { state: 'trying', left: 3, done: 0 })])).toEqual(['ossify-b+3.conf', 'ossify-a.conf']);
    expect(sorted([e('ossify-a.conf', '9-1.0.0', { state: 'good' }), e('ossify-b.conf', '10-2.0.0', { state: 'good' })])).toEqual(['ossify-b.conf', 'ossify-a.conf']);
    expect(sorted([e('ossify-b+0-3.conf', '3-3.0.0', { state: 'bad', done: 3 }), e('ossify-a.conf', '2-2.0.0', { state: 'good' })])).toEqual(['ossify-a.conf', 'ossify-b+0-3.conf']);
  });
});

describe('rollback', () => {
  it('makes the other good slot boot next with one entry rewrite, and refuses a bad one', async () => {
    const disk = await installFresh('rollback', v1);
    await up(disk, v2);
    const trial = await ossify(['rollback', '--disk', disk]);
    // b is on trial and a is good: rolling back to a cancels the trial.
    expect(trial.exitCode, trial.stderr).toBe(0);
    expect((await diskStatus(disk)).next).toBe('a');
    const back = await ossify(['rollback', '--disk', disk]);
    expect(back.exitCode).toBe(2);
    expect(back.stderr).toMatch(/slot b \(2\.0\.0\) is trying \(3 tries left\): it has not been proven to boot/);
    await renameEntry(disk, 'ossify-b+3.conf', 'ossify-b.conf');
    const r = await rollback({ disk });
    expect(r).toMatchObject({ from: 'a', to: 'b', generation: 4 });
    let s = await diskStatus(disk);
    expect(s.next).toBe('b');
    expect(s.slots.map((x) => x.entry!.generation)).toEqual([3, 4]);
    await oracles(disk);
    await renameEntry(disk, 'ossify-a.conf', 'ossify-a+0-3.conf');
    const bad = await ossify(['rollback', '--disk', disk]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/slot a \(1\.0\.0\) is bad \(failed 3 tries\)/);
    s = await diskStatus(disk);
    expect(s.next).toBe('b');
  });
});

describe('crash safety', () => {
  // Every step boundary, byte points inside the two long writes, and after the switch.
  const POINTS = ['check-release', 'plan', 'clean-esp', 'retire-entry', 'write-root', 'write-root:4096', 'verify-root', 'esp-files', 'esp-files:100000', 'esp-files:180000', 'stage-entry', 'switch', 'end'];

  it.each(POINTS)('killed at %s: the previous release still boots next, and a rerun completes the upgrade', async (point) => {
    const base = await installFresh(`crash-base-${point.replace(':', '-')}`, v1);
    const first = await up(base, v2);
    expect(first.slot).toBe('b');
    await renameEntry(base, 'ossify-b+3.conf', 'ossify-b.conf');
    // The disk: 1.0.0 in a, 2.0.0 blessed in b. Kill the upgrade to 3.0.0, which writes a.
    const disk = copyDisk(base, `crash-${point.replace(':', '-')}`);
    const r = await ossify(['upgrade', '--from', v3, '--disk', disk], { env: { [CRASH_ENV]: point } });
    expect(r.signal, r.stderr).toBe('SIGKILL');
    const s = await diskStatus(disk);
    const expectNext: Slot = point === 'end' ? 'a' : 'b';
    expect(s.next).toBe(expectNext);
    expect(s.slots[1]!.release!.version).toBe('2.0.0');
    const retired = POINTS.indexOf(point) > POINTS.indexOf('retire-entry') && point !== 'end';
    if (retired) {
      // Once retire-entry ran, slot a has no entry (nothing can boot it half-written), and
      // it claims a release only once that release is written and verified.
      expect(s.slots[0]!.entry).toBeUndefined();
      if (POINTS.indexOf(point) > POINTS.indexOf('esp-files:180000')) expect(s.slots[0]!.release).toMatchObject({ version: '3.0.0' });
      else expect(s.slots[0]!.release).toBeUndefined();
    } else if (point !== 'end') {
      expect(s.slots[0]).toMatchObject({ entry: { state: 'good', file: 'ossify-a.conf' }, release: { version: '1.0.0' } });
    }
    const { problems } = await espCheck(disk);
    // Between steps the ESP is clean; inside a FAT change at most a leak or an unfinished FAT copy is left.
    for (const p of problems) expect(['lost-clusters', 'fat-copies-differ']).toContain(p.kind);
    if (!point.includes(':')) expect(problems).toEqual([]);
    const again = await ossify(['upgrade', '--from', v3, '--disk', disk, '--json']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ slot: 'a', entryFile: 'ossify-a+3.conf', alreadyInstalled: point === 'end' });
    const done = await diskStatus(disk, { verify: true });
    expect(done.next).toBe('a');
    expect(done.slots[0]).toMatchObject({ entry: { state: 'trying', triesLeft: 3 }, release: { version: '3.0.0', verified: true } });
    expect(done.warnings).toEqual([]);
    await oracles(disk);
  });
});

/** A running system as the script sees it: /proc, /sys and /dev under one directory, the ESP mounted as a directory. */
async function fakeDevice(active: Slot, from?: string, activeEntry?: { file: string; content: string | Buffer }) {
  needTool('busybox', 'busybox');
  const root = join(work.path, `device-${active}-${Math.random().toString(36).slice(2)}`);
  const esp = join(root, 'esp');
  for (const d of ['proc', 'dev', 'sys/class/block/vda1', 'sys/class/block/vda2', 'sys/class/block/vda3', 'esp/loader/entries', `esp/ossify/${active}`, 'payload/ossify']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'proc/cmdline'), `ossify.slot=${active} ossify.root=ROOT-${active.toUpperCase()} ${CMDLINE}\n`);
  writeFileSync(join(root, 'proc/mounts'), '');
  ['ESP', 'ROOT-A', 'ROOT-B'].forEach((label, i) => {
    writeFileSync(join(root, `sys/class/block/vda${i + 1}/uevent`), `MAJOR=254\nMINOR=${i + 1}\nDEVNAME=vda${i + 1}\nDEVTYPE=partition\nPARTN=${i + 1}\nPARTNAME=${label}\n`);
    writeFileSync(join(root, `sys/class/block/vda${i + 1}/size`), `${(2 * MiB) / 512}\n`);
    writeFileSync(join(root, `dev/vda${i + 1}`), Buffer.alloc(2 * MiB));
  });
  if (activeEntry) {
    mkdirSync(join(esp, activeEntry.file, '..'), { recursive: true });
    writeFileSync(join(esp, activeEntry.file), activeEntry.content);
  } else {
    writeFileSync(join(esp, `loader/entries/ossify-${active}.conf`), entryConf({ slot: active, generation: 4, name: 'fake-os', version: '1.0.0', cmdline: CMDLINE }));
  }
  writeFileSync(join(root, 'payload/ossify/install.sh'), DEVICE_SCRIPT);
  const payload = join(root, 'payload/ossify/payload');
  mkdirSync(payload);
  const src = await openReleaseDir(from ?? v2);
  for (const n of Object.keys(src.release.artifacts)) copyFileSync(src.path(n), join(payload, n));
  writeFileSync(join(payload, 'release.json'), src.releaseJson);
  const env = { OSSIFY_ROOT: join(root, 'payload'), OSSIFY_BUSYBOX: '/usr/bin/busybox', OSSIFY_PROC: join(root, 'proc'), OSSIFY_SYS: join(root, 'sys'), OSSIFY_DEV: join(root, 'dev'), OSSIFY_ESP_DIR: esp, OSSIFY_MACHINE: 'x86_64' };
  const sh = (args: string[], more: Record<string, string> = {}) => run('busybox', ['sh', join(root, 'payload/ossify/install.sh'), ...args], { env: { ...env, ...more } });
  return { root, esp, src, sh, payload };
}

describe('the on-device script', () => {

  it('upgrades the other slot exactly as the offline upgrade would', async () => {
    const { root, esp, src, sh } = await fakeDevice('a');
    const r = sh(['upgrade']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/slot b boots next with 3 tries: fake-os 2\.0\.0 \(entry generation 5\)/);
    expect(readFileSync(join(esp, 'loader/entries/ossify-b+3.conf'), 'utf8')).toBe(entryConf({ slot: 'b', generation: 5, name: 'fake-os', version: '2.0.0', cmdline: CMDLINE }));
    expect(sha(readFileSync(join(esp, 'ossify/b/vmlinuz')))).toBe(src.release.artifacts['vmlinuz']!.sha256);
    expect(sha(readFileSync(join(esp, 'ossify/b/initrd.img')))).toBe(src.release.artifacts['initramfs.img']!.sha256);
    expect(readFileSync(join(esp, 'ossify/b/release.json'), 'utf8')).toBe(encodeRelease(src.release));
    const rootB = readFileSync(join(root, 'dev/vda3'));
    expect(sha(rootB.subarray(0, src.release.artifacts['rootfs.squashfs']!.size))).toBe(src.release.artifacts['rootfs.squashfs']!.sha256);
    expect(readFileSync(join(root, 'dev/vda2')).every((b) => b === 0)).toBe(true);
    expect(run('sh', ['-c', 'ls "$1"/loader/entries', 'sh', esp]).stdout.trim().split('\n').sort()).toEqual(['ossify-a.conf', 'ossify-b+3.conf']);
  });

  it('refuses a tampered payload, another arch, a slot too small, a system not booted by ossify', async () => {
    const { root, esp, sh, payload } = await fakeDevice('b');
    expect(sh(['upgrade'], { OSSIFY_MACHINE: 'aarch64' }).stderr).toMatch(/built for x86_64, this machine is/);
    writeFileSync(join(root, 'proc/cmdline'), 'console=ttyS0\n');
    expect(sh(['upgrade']).stderr).toMatch(/not booted from an ossify slot/);
    writeFileSync(join(root, 'proc/cmdline'), 'ossify.slot=b\n');
    writeFileSync(join(root, 'sys/class/block/vda2/size'), '8\n');
    expect(sh(['upgrade']).stderr).toMatch(/does not fit ROOT-A/);
    writeFileSync(join(payload, 'vmlinuz'), Buffer.concat([readFileSync(join(payload, 'vmlinuz')).subarray(1), Buffer.from('x')]));
    const r = sh(['upgrade']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/vmlinuz does not match its sha256 in release.json: digest mismatch/);
    expect(sh(['verify']).code).toBe(1);
    // Nothing was touched by any of the refusals.
    expect(run('sh', ['-c', 'cd "$1" && find . -type f | sort', 'sh', esp]).stdout.trim()).toBe('./loader/entries/ossify-b.conf');
    expect(readFileSync(join(root, 'dev/vda2')).every((b) => b === 0)).toBe(true);
  });

  it('is valid busybox sh and answers help and release', async () => {
    const { sh, src } = await fakeDevice('a');
    expect(run('busybox', ['sh', '-n', '-c', DEVICE_SCRIPT]).code).toBe(0);
    expect(sh(['help']).stdout).toMatch(/upgrade \[--tries N\]/);
    expect(sh(['release']).stdout).toBe(src.releaseJson);
    expect(sh(['verify']).code).toBe(0);
  });
});

describe('release sources', () => {
  it('a pulled directory (release.json) and a build output give the same release', async () => {
    const built: ReleaseSource = await openReleaseDir(v2);
    const pulled = join(work.path, 'pulled');
    mkdirSync(pulled, { recursive: true });
    for (const n of Object.keys(built.release.artifacts)) copyFileSync(built.path(n), join(pulled, n));
    await writeFile(join(pulled, 'release.json'), built.releaseJson);
    const src = await openReleaseDir(pulled);
    expect(src.release).toEqual(built.release);
    expect(src.epoch).toBe(EPOCH);
    expect(await readFile(join(pulled, 'release.json'), 'utf8')).toBe(encodeRelease(built.release));
  });
});

describe('the release\'s boot record', () => {
  // Quotes and a backslash: what JSON escapes and the on-device script must decode.
  const RECORDED = 'console=ttyS0 panic=7 note="a b" path=C:\\x';
  let rec1: string;
  let rec2: string;
  beforeAll(() => {
    const withRecord = (version: string, seed: number) => {
      const dir = fakeRelease({ version, seed });
      const build = JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8'));
      build.boot = { entries: 'type1', cmdline: RECORDED, timeout: 2, tries: 5 };
      writeFileSync(join(dir, 'build.json'), `${JSON.stringify(build, null, 2)}\n`);
      return dir;
    };
    rec1 = withRecord('1.0.0', 51);
    rec2 = withRecord('2.0.0', 52);
  });

  it('travels in release.json, and install writes its kernel arguments and timeout', async () => {
    const src = await openReleaseDir(rec1);
    expect(src.release.boot).toEqual({ entries: 'type1', cmdline: RECORDED, timeout: 2, tries: 5 });
    expect(src.release.disk).toEqual({ esp: 34 * MiB, root: 2 * MiB, state: MiB });
    expect(src.releaseJson).toContain(`  "boot": {\n    "entries": "type1",\n    "cmdline": ${JSON.stringify(RECORDED)},\n    "timeout": 2,\n    "tries": 5\n  },\n`);
    const disk = join(work.path, 'record-install.raw');
    const r = await ossify(['install', '--from', rec1, '--disk', disk, '--systemd-boot', sdboot]);
    expect(r.exitCode, r.stderr).toBe(0);
    const { state } = await espCheck(disk);
    expect(state.slots.a.entry!.text).toBe(entryConf({ slot: 'a', generation: 1, name: 'fake-os', version: '1.0.0', cmdline: RECORDED }));
    const d = await openDisk(disk, { write: false });
    const esp = await openFatEditor(partitionIo(d, (await probeLayout(d)).esp));
    expect(Buffer.from(await esp.readFile('loader/loader.conf')).toString()).toMatch(/^timeout 2$/m);
    await d.close();
  });

  it('is needed to install a Type #1 release without --cmdline: an older release is refused, not booted without console', async () => {
    const r = await ossify(['install', '--from', v1, '--disk', join(work.path, 'no-record.raw'), '--systemd-boot', sdboot]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/fake-os 1\.0\.0: its release\.json has no boot record \(a release made by an older ossify\)/);
    expect(r.stderr).toMatch(/--cmdline/);
  });

  it('gives upgrade its tries (--tries overrides) and kernel arguments, offline and on the device alike', async () => {
    const disk = await installFresh('record-upgrade', v1);
    const u = await up(disk, rec2);
    expect(u).toMatchObject({ slot: 'b', entryFile: 'ossify-b+5.conf', tries: 5 });
    const { state } = await espCheck(disk);
    const offline = entryConf({ slot: 'b', generation: 2, name: 'fake-os', version: '2.0.0', cmdline: RECORDED });
    expect(state.slots.b.entry!.text).toBe(offline);
    const forced = await ossify(['upgrade', '--from', rec2, '--disk', await installFresh('record-tries', v1), '--tries', '2', '--json']);
    expect(JSON.parse(forced.stdout)).toMatchObject({ entryFile: 'ossify-b+2.conf', tries: 2 });

    // The running slot boots with CMDLINE; the release's own arguments win over them.
    const { esp, sh } = await fakeDevice('a', rec2);
    const dev = sh(['upgrade']);
    expect(dev.code, dev.stderr).toBe(0);
    expect(dev.stderr).toMatch(/slot b boots next with 5 tries/);
    expect(readFileSync(join(esp, 'loader/entries/ossify-b+5.conf'), 'utf8')).toBe(entryConf({ slot: 'b', generation: 5, name: 'fake-os', version: '2.0.0', cmdline: RECORDED }));
    const again = await fakeDevice('a', rec2);
    expect(again.sh(['upgrade', '--tries', '1']).code).toBe(0);
    expect(readFileSync(join(again.esp, 'loader/entries/ossify-b+1.conf'), 'utf8')).toContain(`options ossify.slot=b ossify.root=ROOT-B ${RECORDED}\n`);
  });

  it('an older release keeps the running slot\'s kernel arguments and 3 tries, and says so', async () => {
    const { esp, sh } = await fakeDevice('a');
    const dev = sh(['upgrade']);
    expect(dev.stderr).toMatch(/release\.json has no boot record \(a release made by an older ossify\): slot b gets the kernel arguments of slot a/);
    expect(readFileSync(join(esp, 'loader/entries/ossify-b+3.conf'), 'utf8')).toContain(`${CMDLINE}\n`);
  });

  it('refuses a record that contradicts the payload', async () => {
    const dir = fakeRelease({ version: '2.0.0', seed: 53 });
    const build = JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8'));
    build.boot = { entries: 'uki', cmdline: '', timeout: 0, tries: 3 };
    writeFileSync(join(dir, 'build.json'), `${JSON.stringify(build, null, 2)}\n`);
    const r = await ossify(['upgrade', '--from', dir, '--disk', await installFresh('record-bad', v1)]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/its boot record says boot\.entries uki, but it ships no unified kernel images/);
    const { sh } = await fakeDevice('a', dir);
    expect(sh(['upgrade']).stderr).toMatch(/release\.json says boot\.entries uki, but the payload has no unified kernel images/);
  });
});

describe('--image', () => {
  it('installs from a registry by digest the same bytes as from the directory, and upgrades recording the image on the ESP', async () => {
    const reg = await startRegistry();
    try {
      const busybox = fakeStaticElf(62);
      const p1 = await pushBuild(v1, `${reg.host}/ossify/fake:1.0.0`, { insecure: true, busybox, blobCache: false });
      const p2 = await pushBuild(v2, `${reg.host}/ossify/fake:2.0.0`, { insecure: true, busybox, blobCache: false });
      const disk = join(work.path, 'from-registry.raw');
      const i = await ossify(['install', '--image', p1.reference, '--insecure', '--disk', disk, '--systemd-boot', sdboot, '--cmdline', CMDLINE]);
      expect(i.exitCode, i.stderr).toBe(0);
      expect(sha(readFileSync(disk))).toBe(sha(readFileSync(await installFresh('same-as-registry', v1))));
      const tag = await ossify(['upgrade', '--image', `${reg.host}/ossify/fake:2.0.0`, '--insecure', '--disk', disk]);
      expect(tag.exitCode).toBe(2);
      expect(tag.stderr).toMatch(/has no digest: a tag can point at another image tomorrow/);
      const u = await ossify(['upgrade', '--image', p2.reference, '--insecure', '--disk', disk, '--json']);
      expect(u.exitCode, u.stderr).toBe(0);
      expect(JSON.parse(u.stdout)).toMatchObject({ slot: 'b', generation: 2 });
      const s = await diskStatus(disk, { verify: true });
      expect(s.slots[0]!.release).toMatchObject({ version: '1.0.0', recordedIn: 'entry-title' });
      expect(s.slots[0]!.release!.image).toBeUndefined();
      expect(s.slots[1]!.release).toMatchObject({ version: '2.0.0', image: p2.reference, recordedIn: 'release.json', verified: true });
      await oracles(disk);
      // The same release by tag, when explicitly allowed, is already there.
      const again = await ossify(['upgrade', '--image', `${reg.host}/ossify/fake:2.0.0`, '--allow-tag', '--insecure', '--disk', disk, '--json']);
      expect(again.exitCode, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout)).toMatchObject({ slot: 'b', alreadyInstalled: true });
    } finally {
      await reg.stop();
    }
  }, 120_000);
});

/**
 * verified boot: a fake release with a dm-verity tree (and, if asked, the two
 * slots' UKIs) as `ossify build` records them. The squashfs is left unpadded so the
 * installers must write the zeros between it and the tree themselves.
 */
async function fakeVerityRelease(r: FakeRelease & { uki?: boolean }): Promise<{ dir: string; verity: SlotVerity }> {
  const dir = fakeRelease(r);
  const build = JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8'));
  const squashfs = join(dir, 'rootfs.squashfs');
  const raw = readFileSync(squashfs);
  const used = raw.readBigUInt64LE(40);
  writeFileSync(squashfs, raw.subarray(0, Number(used)));
  build.artifacts['rootfs.squashfs'] = { sha256: sha(readFileSync(squashfs)), size: Number(used) };
  const v = await computeVerity(squashfs, { hashOffset: slotHashOffset(Number(used)) });
  writeFileSync(join(dir, 'rootfs.verity'), v.tree);
  build.artifacts['rootfs.verity'] = { sha256: sha(v.tree), size: v.tree.length };
  build.verity = { roothash: v.rootHash, salt: v.salt, hashOffset: v.hashOffset, dataBlocks: v.dataBlocks, dataBlockSize: 4096, hashBlockSize: 4096, algorithm: 'sha256' };
  if (r.uki) {
    for (const slot of ['a', 'b'] as const) {
      const uki = noise(90_000 + r.seed, r.seed + (slot === 'a' ? 5 : 6));
      writeFileSync(join(dir, `uki-${slot}.efi`), uki);
      build.artifacts[`uki-${slot}.efi`] = { sha256: sha(uki), size: uki.length };
    }
    build.boot = { entries: 'uki', secureBoot: false };
  }
  writeFileSync(join(dir, 'build.json'), `${JSON.stringify(build, null, 2)}\n`);
  return { dir, verity: { rootHash: v.rootHash, salt: v.salt, dataBlocks: v.dataBlocks, hashOffset: v.hashOffset } };
}

/** veritysetup verify on one slot of a disk, cut out into a file of its own. */
async function veritysetupSlot(disk: string, label: string, v: SlotVerity, treeSize: number) {
  needTool('veritysetup', 'cryptsetup-bin');
  const d = await openDisk(disk, { write: false });
  const part = (await probeLayout(d)).partitions.find((p) => p.label === label)!;
  await d.close();
  const img = join(work.path, `${label}-verity.img`);
  writeFileSync(img, await readRange(disk, part.offset, v.hashOffset + treeSize));
  return run('veritysetup', ['verify', img, img, v.rootHash, `--hash-offset=${v.hashOffset}`]);
}

describe('dm-verity slots', () => {
  it('install and upgrade put the tree after the squashfs (zero-padded), veritysetup accepts both slots, and the entries pin the root', async () => {
    const r1 = await fakeVerityRelease({ version: '1.0.0', seed: 41, rootfsBytes: 70_001 });
    const r2 = await fakeVerityRelease({ version: '2.0.0', seed: 42, rootfsBytes: 90_003 });
    const disk = await installFresh('verity', r1.dir);
    let s = await diskStatus(disk, { verify: true });
    expect(s.slots[0]!.verity).toEqual({ roothash: r1.verity.rootHash, hashOffset: r1.verity.hashOffset, dataBlocks: r1.verity.dataBlocks, verified: true });
    const { state } = await espCheck(disk);
    expect(state.slots.a.entry!.text).toBe(entryConf({ slot: 'a', generation: 1, name: 'fake-os', version: '1.0.0', cmdline: CMDLINE, verity: r1.verity }));
    expect(state.slots.a.entry!.options).toContain(`ossify.verity=${r1.verity.rootHash} ossify.verity.salt=${r1.verity.salt} ossify.verity.blocks=${r1.verity.dataBlocks} ossify.verity.hashoffset=${r1.verity.hashOffset}`);
    expect((await veritysetupSlot(disk, 'ROOT-A', r1.verity, readFileSync(join(r1.dir, 'rootfs.verity')).length)).code).toBe(0);
    // An in-place install on a blank disk gives the same bytes as a new image.
    const blank = join(work.path, 'verity-blank.raw');
    writeFileSync(blank, '');
    await truncate(blank, readFileSync(disk).length);
    await install({ disk: blank, source: await openReleaseDir(r1.dir), cacheDir: join(work.path, 'cache'), systemdBoot: sdboot, cmdline: CMDLINE });
    expect(sha(readFileSync(blank))).toBe(sha(readFileSync(disk)));

    // ROOT-B holds stale bytes from an earlier life: they are hashed if left between the squashfs and the tree.
    const d = await openDisk(disk, { write: true });
    const rootB = (await probeLayout(d)).roots.b;
    await d.write(rootB.offset, Buffer.alloc(256 * 1024, 0xee));
    await d.close();
    await up(disk, r2.dir);
    s = await diskStatus(disk, { verify: true });
    expect(s.slots[1]).toMatchObject({ entry: { state: 'trying', file: 'ossify-b+3.conf' }, verity: { roothash: r2.verity.rootHash, verified: true } });
    expect(s.warnings).toEqual([]);
    const gap = await readRange(disk, rootB.offset + 90_003, r2.verity.hashOffset - 90_003);
    expect(gap.every((b) => b === 0)).toBe(true);
    const vs = await veritysetupSlot(disk, 'ROOT-B', r2.verity, readFileSync(join(r2.dir, 'rootfs.verity')).length);
    expect(vs.stderr).toBe('');
    expect(vs.code).toBe(0);
    await oracles(disk);

    // status --verify notices a slot whose data no longer matches the root its entry pins.
    const dd = await openDisk(disk, { write: true });
    await dd.write(rootB.offset + 5000, Buffer.from([0x42]));
    await dd.close();
    s = await diskStatus(disk, { verify: true });
    expect(s.slots[1]!.verity!.verified).toBe(false);
    expect(s.warnings.join('\n')).toMatch(/ROOT-B does not hash to the verity root its entry pins/);
  });

  it('refuses a release whose tree is not its squashfs’s, or whose root hash is not pinned', async () => {
    const r = await fakeVerityRelease({ version: '2.0.0', seed: 43 });
    const disk = await installFresh('verity-refuse', v1);
    const tree = readFileSync(join(r.dir, 'rootfs.verity'));
    tree[4096 + 7]! ^= 1;
    writeFileSync(join(r.dir, 'rootfs.verity'), tree);
    const build = JSON.parse(readFileSync(join(r.dir, 'build.json'), 'utf8'));
    build.artifacts['rootfs.verity'].sha256 = sha(tree);
    writeFileSync(join(r.dir, 'build.json'), `${JSON.stringify(build, null, 2)}\n`);
    const bad = await ossify(['upgrade', '--from', r.dir, '--disk', disk]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/rootfs.verity is not the hash tree of rootfs.squashfs/);
    delete build.verity;
    writeFileSync(join(r.dir, 'build.json'), `${JSON.stringify(build, null, 2)}\n`);
    const unpinned = await ossify(['upgrade', '--from', r.dir, '--disk', disk]);
    expect(unpinned.exitCode).toBe(2);
    expect(unpinned.stderr).toMatch(/ships rootfs.verity but release.json has no sha256 roothash/);
    expect((await diskStatus(disk)).slots[1]!.entry).toBeUndefined();
  });

  it('the on-device script writes the same slot bytes and entry as the offline upgrade', async () => {
    const r1 = await fakeVerityRelease({ version: '1.0.0', seed: 44 });
    const r2 = await fakeVerityRelease({ version: '2.0.0', seed: 45, rootfsBytes: 80_123 });
    const active = entryConf({ slot: 'a', generation: 4, name: 'fake-os', version: '1.0.0', cmdline: CMDLINE, verity: r1.verity });
    const { root, esp, sh } = await fakeDevice('a', r2.dir, { file: 'loader/entries/ossify-a.conf', content: active });
    writeFileSync(join(root, 'dev/vda3'), Buffer.alloc(2 * MiB, 0xee));
    const r = sh(['upgrade']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/ROOT-B verity tree written and verified/);
    expect(readFileSync(join(esp, 'loader/entries/ossify-b+3.conf'), 'utf8')).toBe(entryConf({ slot: 'b', generation: 5, name: 'fake-os', version: '2.0.0', cmdline: CMDLINE, verity: r2.verity }));
    const slot = readFileSync(join(root, 'dev/vda3'));
    const tree = readFileSync(join(r2.dir, 'rootfs.verity'));
    expect(slot.subarray(0, 80_123).equals(readFileSync(join(r2.dir, 'rootfs.squashfs')))).toBe(true);
    expect(slot.subarray(80_123, r2.verity.hashOffset).every((b) => b === 0)).toBe(true);
    expect(slot.subarray(r2.verity.hashOffset, r2.verity.hashOffset + tree.length).equals(tree)).toBe(true);
  });
});

describe('unified kernel image slots', () => {
  it('install, upgrade, status and rollback handle EFI/Linux/ossify-<generation>-<slot>+N.efi; mixing entry forms is refused', async () => {
    const u1 = await fakeVerityRelease({ version: '1.0.0', seed: 51, uki: true });
    const u2 = await fakeVerityRelease({ version: '2.0.0', seed: 52, uki: true });
    const disk = await installFresh('uki', u1.dir);
    let s = await diskStatus(disk);
    expect(s.bootOrder).toEqual(['ossify-1-a.efi']);
    expect(s.slots[0]!.entry).toMatchObject({ file: 'ossify-1-a.efi', state: 'good', generation: 1 });
    let { state } = await espCheck(disk);
    expect(state.slots.a.entry!.path).toBe('EFI/Linux/ossify-1-a.efi');

    expect(await up(disk, u2.dir)).toMatchObject({ slot: 'b', entryFile: 'ossify-2-b+3.efi', generation: 2 });
    s = await diskStatus(disk, { verify: true });
    expect(s.bootOrder).toEqual(['ossify-2-b+3.efi', 'ossify-1-a.efi']);
    expect(s.slots[1]).toMatchObject({ bootsNext: true, entry: { state: 'trying', triesLeft: 3 }, release: { version: '2.0.0', verified: true } });
    const d = await openDisk(disk, { write: false });
    const e = await openFatEditor(partitionIo(d, (await probeLayout(d)).esp));
    expect(sha(await e.readFile('EFI/Linux/ossify-2-b+3.efi'))).toBe(sha(readFileSync(join(u2.dir, 'uki-b.efi'))));
    expect((await e.list('ossify/b')).map((f) => f.name)).toEqual(['release.json']);
    await d.close();
    await oracles(disk);

    // A Type #1 release cannot go onto a disk that boots UKIs (their entries do not sort against each other).
    const mixed = await ossify(['upgrade', '--from', v3, '--disk', disk, '--force']);
    expect(mixed.exitCode).toBe(2);
    expect(mixed.stderr).toMatch(/boots from Type #1 entries \(boot.entries: type1\), but this disk boots unified kernel images/);

    // systemd-boot counts down, the init blesses: then a rollback renames slot a's UKI to a newer generation.
    const dw = await openDisk(disk, { write: true });
    await (await openFatEditor(partitionIo(dw, (await probeLayout(dw)).esp))).rename('EFI/Linux/ossify-2-b+3.efi', 'ossify-2-b.efi');
    await dw.close();
    expect(await rollback({ disk })).toMatchObject({ from: 'b', to: 'a', entryFile: 'ossify-3-a.efi', generation: 3 });
    s = await diskStatus(disk);
    expect(s.bootOrder).toEqual(['ossify-3-a.efi', 'ossify-2-b.efi']);
    // The next upgrade overwrites slot b and sorts first with generation 4.
    expect(await up(disk, u2.dir)).toMatchObject({ slot: 'b', entryFile: 'ossify-4-b+3.efi' });
    ({ state } = await espCheck(disk));
    expect(state.order.map((x) => x.file)).toEqual(['ossify-4-b+3.efi', 'ossify-3-a.efi']);
    await oracles(disk);
  });

  it('orders UKI entries by the generation in their names, bad ones last', () => {
    const u = (slot: Slot, gen: number, counting: SlotEntry['counting']): SlotEntry => {
      const file = ukiFileName(slot, gen, counting.state === 'good' ? undefined : { left: counting.state === 'bad' ? 0 : counting.left, done: counting.done });
      return { file, path: `EFI/Linux/${file}`, kind: 'uki', counting, version: undefined, title: undefined, generation: gen, sortKey: 'ossify', options: '', extraCmdline: '', text: '' };
    };
    const sorted = (xs: SlotEntry[]) => [...xs].sort(compareEntries).map((x) => x.file);
    expect(sorted([u('a', 1, { state: 'good' }), u('b', 2, { state: 'trying', left: 3, done: 0 })])).toEqual(['ossify-2-b+3.efi', 'ossify-1-a.efi']);
    expect(sorted([u('b', 9, { state: 'good' }), u('a', 10, { state: 'good' })])).toEqual(['ossify-10-a.efi', 'ossify-9-b.efi']);
    expect(sorted([u('b', 3, { state: 'bad', done: 3 }), u('a', 2, { state: 'good' })])).toEqual(['ossify-2-a.efi', 'ossify-3-b+0-3.efi']);
  });

  it('the on-device script puts the target slot’s UKI in EFI/Linux with the next generation', async () => {
    const u2 = await fakeVerityRelease({ version: '2.0.0', seed: 53, uki: true });
    const { esp, sh, root } = await fakeDevice('a', u2.dir, { file: 'EFI/Linux/ossify-4-a.efi', content: noise(1000, 7) });
    const r = sh(['upgrade']);
    expect(r.code, r.stderr).toBe(0);
    expect(run('sh', ['-c', 'cd "$1" && find . -type f | sort', 'sh', esp]).stdout.trim().split('\n')).toEqual(['./EFI/Linux/ossify-4-a.efi', './EFI/Linux/ossify-5-b+3.efi', './ossify/b/release.json']);
    expect(sha(readFileSync(join(esp, 'EFI/Linux/ossify-5-b+3.efi')))).toBe(sha(readFileSync(join(u2.dir, 'uki-b.efi'))));
    expect(readFileSync(join(root, 'dev/vda3')).subarray(u2.verity.hashOffset, u2.verity.hashOffset + 4096).subarray(0, 6).toString()).toBe('verity');
    // A Type #1 payload onto this disk is refused.
    const t1 = await fakeDevice('a', v2, { file: 'EFI/Linux/ossify-4-a.efi', content: noise(1000, 7) });
    expect(t1.sh(['upgrade']).stderr).toMatch(/boots from Type #1 entries, but this disk boots unified kernel images/);
  });
});
