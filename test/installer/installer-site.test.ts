import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { entryConf, type Slot } from '../../builder/boot/entries.ts';
import { DEVICE_SCRIPT } from '../../builder/installer/device-script.ts';
import { openDisk } from '../../builder/installer/disk.ts';
import { install } from '../../builder/installer/install.ts';
import { type DiskPartition } from '../../builder/installer/layout.ts';
import { openReleaseDir, pullReleaseSource } from '../../builder/installer/release.ts';
import { diskStatus } from '../../builder/installer/status.ts';
import { CRASH_ENV } from '../../builder/installer/steps.ts';
import { upgrade } from '../../builder/installer/upgrade.ts';
import { encodeRelease } from '../../builder/release/release-json.ts';
import { pushBuild } from '../../builder/release/push.ts';
import { SEED_PENDING_MARKER, siteTar, siteTree } from '../../builder/site/data.ts';
import { ossify } from '../helpers/cli.ts';
import { diskImages, diskOracles, fakeSquashfs, layoutOf, noise, readRange, renameEntry, sha, writeBuildOutput } from '../helpers/installer-fixtures.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';
import { fakeStaticElf, startRegistry } from '../helpers/registry.ts';

/**
 * fleet (docs/fleet.md): installing and upgrading from a site release puts its site.tar at
 * the start of STATE, as `ossify build` does in disk.raw. Small synthetic releases (the OS
 * files are noise, the site data is the real siteTar), checked with GNU tar and bsdtar (what
 * the rootfs init's busybox tar reads), sgdisk -v and fsck.fat -n; crash points through
 * OSSIFY_TEST_CRASH_AT; the on-device script run by the host's busybox. test/site/site-build.test.ts
 * installs real site builds; test/e2e/site.test.ts boots one.
 */

const MiB = 1 << 20;
const EPOCH = 1_700_000_000;
const CMDLINE = 'console=ttyS0 panic=5';
const BASE_DIGEST = `sha256:${sha(Buffer.from('fake profile'))}`;
const work = tempDir('installer-site');
afterAll(() => work.cleanup());

interface SiteSpec {
  name: string;
  hostname: string;
  /** Extra bytes of site data (a file under etc/), to make a seed of a given size. */
  pad?: number;
}

let dirs = 0;
/**
 * A build output as `ossify build` writes it, minus disk.raw: the OS of `version` (the same
 * bytes for every site of it), and with `site`, that site's seed and the site build's records.
 */
async function fakeRelease(version: string, seed: number, site?: SiteSpec): Promise<string> {
  const dir = join(work.path, `release-${version}-${site?.name ?? 'base'}-${dirs++}`);
  mkdirSync(dir, { recursive: true });
  const files: Record<string, Buffer> = {
    'rootfs.squashfs': fakeSquashfs(60_000 + seed, seed),
    vmlinuz: noise(150_000 + seed, seed + 1),
    'initramfs.img': noise(40_000 + seed, seed + 2),
  };
  if (site) {
    const tree = await siteTree({ name: site.name, hostname: site.hostname, env: { STORE: site.name }, ...(site.pad ? { files: [{ path: 'etc/pad', content: 'x'.repeat(site.pad) }] } : {}) }, EPOCH);
    files['site.tar'] = Buffer.from(await siteTar(tree, EPOCH));
  }
  writeBuildOutput(dir, files, {
    name: 'fake-os',
    version,
    arch: 'x86_64',
    profileDigest: site ? `sha256:${sha(Buffer.from(`fake profile, site ${site.name} ${site.hostname}`))}` : BASE_DIGEST,
    epoch: EPOCH,
    ...(site ? { baseDigest: BASE_DIGEST, site: { name: site.name } } : {}),
  });
  return dir;
}

let base1: string; // fake-os 1.0.0, no site
let base3: string; // fake-os 3.0.0, no site
let s1v1: string; // site-1 on 1.0.0
let s1v1b: string; // site-1 on 1.0.0 with changed site data
let s1v2: string; // site-1 on 2.0.0
let s1v2b: string; // site-1 on 2.0.0 with changed site data
let s2v2: string; // site-2 on 2.0.0
let sdboot: string;

beforeAll(async () => {
  base1 = await fakeRelease('1.0.0', 11);
  base3 = await fakeRelease('3.0.0', 33);
  s1v1 = await fakeRelease('1.0.0', 11, { name: 'site-1', hostname: 'site-1.fleet.test' });
  s1v1b = await fakeRelease('1.0.0', 11, { name: 'site-1', hostname: 'till-1.fleet.test', pad: 3000 });
  s1v2 = await fakeRelease('2.0.0', 22, { name: 'site-1', hostname: 'site-1.fleet.test' });
  s1v2b = await fakeRelease('2.0.0', 22, { name: 'site-1', hostname: 'site-1b.fleet.test', pad: 6000 });
  s2v2 = await fakeRelease('2.0.0', 22, { name: 'site-2', hostname: 'site-2.fleet.test' });
  sdboot = join(work.path, 'systemd-bootx64.efi');
  writeFileSync(sdboot, noise(80_000, 99));
});

const seedOf = (dir: string) => readFileSync(join(dir, 'site.tar'));

const { installFresh, copyDisk } = diskImages(work.path, () => ({ systemdBoot: sdboot, cmdline: CMDLINE }));

/** The STATE partition cut out into a file of its own, as the rootfs init's tar reads the device. */
async function stateImage(disk: string, name: string): Promise<{ file: string; part: DiskPartition; bytes: Buffer }> {
  const part = (await layoutOf(disk)).state!;
  const bytes = await readRange(disk, part.offset, part.size);
  const file = join(work.path, `${name}-state.img`);
  writeFileSync(file, bytes);
  return { file, part, bytes };
}

/** What the rootfs init and tar programs see in STATE. */
async function stateSeen(disk: string, name: string) {
  needTool('tar', 'tar');
  needTool('bsdtar', 'libarchive-tools');
  const { file, bytes } = await stateImage(disk, name);
  const list = run('tar', ['-tvf', file]);
  return {
    bytes,
    // overlays/default/sbin/init: `dd bs=1 skip=257 count=5` must say ustar.
    initApplies: bytes.subarray(257, 262).toString('latin1') === 'ustar',
    tarList: list.code === 0 ? list.stdout : undefined,
    hostname: list.code === 0 ? run('bsdtar', ['-xOf', file, 'etc/hostname']).stdout : undefined,
  };
}

/** sgdisk -v on the disk and fsck.fat -n on the ESP, as a user would check them. */
const oracles = (disk: string) => diskOracles(disk, join(work.path, 'esp-check.img'));

/** sha256 of every byte outside the given ranges, and of each range. */
async function hashesOutside(disk: string, ranges: { offset: number; size: number }[]): Promise<string[]> {
  const all = readFileSync(disk);
  const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
  const out: string[] = [];
  let pos = 0;
  for (const r of sorted) {
    out.push(sha(all.subarray(pos, r.offset)));
    pos = r.offset + r.size;
  }
  out.push(sha(all.subarray(pos)));
  return out;
}

describe('install from a site release', () => {
  it('puts the seed at the start of STATE; the rest is the base disk byte for byte; tar, sgdisk and fsck.fat agree', async () => {
    const baseDisk = await installFresh('base-1', base1);
    const r = await ossify(['install', '--from', s1v1, '--disk', join(work.path, 'site-1.raw'), '--systemd-boot', sdboot, '--cmdline', CMDLINE, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const seed = seedOf(s1v1);
    expect(JSON.parse(r.stdout)).toMatchObject({ created: true, site: { name: 'site-1', bytes: seed.length } });
    const disk = join(work.path, 'site-1.raw');
    await oracles(disk);
    const seen = await stateSeen(disk, 'site-1');
    expect(seen.initApplies).toBe(true);
    expect(seen.bytes.subarray(0, seed.length).equals(seed)).toBe(true);
    expect(seen.tarList).toMatch(/ etc\/ossify\/site\.env\n/);
    expect(seen.hostname).toBe('site-1.fleet.test\n');
    // GUIDs and the FAT serial come from the base digest, as in the site's disk.raw: apart from its seed, the base's disk.
    const state = (await layoutOf(disk)).state!;
    expect(await hashesOutside(disk, [{ offset: state.offset, size: seed.length }])).toEqual(await hashesOutside(baseDisk, [{ offset: state.offset, size: seed.length }]));
    const s = await diskStatus(disk);
    expect(s.site).toEqual({ state: 'seed', name: 'site-1', size: seed.length, sha256: `sha256:${sha(seed)}` });
    expect(s.warnings).toEqual([]);
    expect((await diskStatus(baseDisk)).site).toEqual({ state: 'empty' });
    const text = await ossify(['status', '--disk', disk]);
    expect(text.stdout).toMatch(/^site: {4}site-1 \(\d+ bytes, sha256:[0-9a-f]{12}…\)$/m);

    // A blank disk written in place (existing data in STATE's way) gives the same bytes.
    const blank = join(work.path, 'site-1-blank.raw');
    writeFileSync(blank, '');
    await truncate(blank, readFileSync(disk).length);
    const d = await openDisk(blank, { write: true });
    await d.write(state.offset, noise(2 * 4096, 5));
    await d.close();
    await install({ disk: blank, source: await openReleaseDir(s1v1), cacheDir: work.path, systemdBoot: sdboot, cmdline: CMDLINE });
    expect(sha(readFileSync(blank))).toBe(sha(readFileSync(disk)));
  });

  it('refuses site data that does not fit STATE\'s 1 MiB seed area, however large the disk, before writing anything', async () => {
    const big = await fakeRelease('1.0.0', 11, { name: 'site-big', hostname: 'big.fleet.test', pad: MiB + 4096 });
    const disk = join(work.path, 'big.raw');
    for (const size of [[], ['--size', '48M']]) {
      const r = await ossify(['install', '--from', big, '--disk', disk, '--systemd-boot', sdboot, '--cmdline', CMDLINE, ...size]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/the site data \(\d+ bytes\) does not fit the seed area of the STATE partition \(1048576 bytes\)/);
      expect(run('test', ['-e', disk]).code).toBe(1);
    }
    // Just under the seed area, it goes in.
    const fits = await fakeRelease('1.0.0', 12, { name: 'site-fits', hostname: 'fits.fleet.test', pad: MiB - 64 * 1024 });
    const ok = await ossify(['install', '--from', fits, '--disk', disk, '--systemd-boot', sdboot, '--cmdline', CMDLINE, '--size', '48M']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect((await stateSeen(disk, 'fits')).tarList).toMatch(/ etc\/pad\n/);
  });

  it('from a registry: the pulled release is the build output\'s, and the seed lands in STATE', async () => {
    const reg = await startRegistry();
    try {
      const busybox = fakeStaticElf(62);
      const pushed = await pushBuild(s1v2, `${reg.host}/fleet/fake:2.0.0-site-1`, { insecure: true, busybox, blobCache: false });
      const disk = join(work.path, 'from-registry.raw');
      const i = await ossify(['install', '--image', pushed.reference, '--insecure', '--disk', disk, '--systemd-boot', sdboot, '--cmdline', CMDLINE]);
      expect(i.exitCode, i.stderr).toBe(0);
      expect(i.stdout).toMatch(/site data of site-1 in STATE/);
      const seen = await stateSeen(disk, 'from-registry');
      expect(seen.bytes.subarray(0, seedOf(s1v2).length).equals(seedOf(s1v2))).toBe(true);
      expect(seen.hostname).toBe('site-1.fleet.test\n');
      await oracles(disk);
      // The disk installing the build output gives, byte for byte: GUIDs and FAT serial from the base digest, the seed, the ESP.
      const fromDir = await installFresh('from-dir-2', s1v2);
      expect(sha(readFileSync(disk))).toBe(sha(readFileSync(fromDir)));
      // The pulled release.json is the one `--from` a site build gives, naming its base digest.
      const pulled = await pullReleaseSource(pushed.reference, { insecure: true });
      try {
        const src = await openReleaseDir(s1v2);
        expect(pulled.releaseJson).toBe(src.releaseJson);
        expect(src.release).toMatchObject({ baseDigest: BASE_DIGEST, artifacts: { 'site.tar': { sha256: sha(seedOf(s1v2)) } } });
        expect(src.releaseJson).toBe(encodeRelease(src.release));
      } finally {
        await pulled.cleanup();
      }
    } finally {
      await reg.stop();
    }
  }, 120_000);
});

describe('upgrade from a site release', () => {
  it('writes the other slot and STATE only; a release without site data leaves STATE alone', async () => {
    const disk = await installFresh('up-base', base1);
    const layout = await layoutOf(disk);
    const seed = seedOf(s1v2);
    const outside = [layout.roots.b, layout.esp, { offset: layout.state!.offset, size: seed.length }];
    const before = await hashesOutside(disk, outside);
    const r = await upgrade({ disk, source: await openReleaseDir(s1v2) });
    expect(r).toMatchObject({ slot: 'b', generation: 2, alreadyInstalled: false, site: { name: 'site-1', written: true } });
    expect(await hashesOutside(disk, outside)).toEqual(before);
    await oracles(disk);
    const seen = await stateSeen(disk, 'up-base');
    expect(seen.bytes.subarray(0, seed.length).equals(seed)).toBe(true);
    expect(seen.hostname).toBe('site-1.fleet.test\n');
    const s = await diskStatus(disk, { verify: true });
    expect(s.next).toBe('b');
    expect(s.slots[1]!.release).toMatchObject({ version: '2.0.0', verified: true });
    expect(s.site).toMatchObject({ state: 'seed', name: 'site-1' });
    expect(s.warnings).toEqual([]);

    // The fleet's OS moves on with a base image: the machine keeps its site data.
    await renameEntry(disk, 'ossify-b+3.conf', 'ossify-b.conf');
    const stateBefore = sha((await stateImage(disk, 'up-base-2')).bytes);
    const u = await ossify(['upgrade', '--from', base3, '--disk', disk, '--json']);
    expect(u.exitCode, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout)).toMatchObject({ slot: 'a', alreadyInstalled: false });
    expect(JSON.parse(u.stdout).site).toBeUndefined();
    expect(sha((await stateImage(disk, 'up-base-3')).bytes)).toBe(stateBefore);
    await oracles(disk);
  });

  it('with the same OS and new site data, updates STATE alone; a rerun writes nothing', async () => {
    const disk = await installFresh('site-only', s1v1);
    const layout = await layoutOf(disk);
    const before = await hashesOutside(disk, [layout.state!]);
    const r = await ossify(['upgrade', '--from', s1v1b, '--disk', disk, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ slot: 'a', alreadyInstalled: true, site: { name: 'site-1', written: true } });
    expect(await hashesOutside(disk, [layout.state!])).toEqual(before);
    const seen = await stateSeen(disk, 'site-only');
    expect(seen.hostname).toBe('till-1.fleet.test\n');
    expect(seen.tarList).toMatch(/ etc\/pad\n/);
    // Back to the smaller seed: the longer one's leftovers sit behind the end-of-archive blocks, unread.
    const back = await upgrade({ disk, source: await openReleaseDir(s1v1) });
    expect(back).toMatchObject({ alreadyInstalled: true, site: { written: true } });
    const again = await stateSeen(disk, 'site-only-2');
    expect(again.hostname).toBe('site-1.fleet.test\n');
    expect(again.tarList).not.toMatch(/etc\/pad/);
    expect(again.bytes.subarray(0, seedOf(s1v1).length).equals(seedOf(s1v1))).toBe(true);
    expect((await diskStatus(disk)).site).toEqual({ state: 'seed', name: 'site-1', size: seedOf(s1v1).length, sha256: `sha256:${sha(seedOf(s1v1))}` });
    const whole = sha(readFileSync(disk));
    const rerun = await ossify(['upgrade', '--from', s1v1, '--disk', disk]);
    expect(rerun.exitCode, rerun.stderr).toBe(0);
    expect(rerun.stdout).toMatch(/site data of site-1 already on STATE/);
    expect(sha(readFileSync(disk))).toBe(whole);
  });

  it('refuses another site\'s disk unless --replace-site, data ossify did not write, and a disk without STATE', async () => {
    const disk = await installFresh('other-site', s1v1);
    const whole = sha(readFileSync(disk));
    const other = await ossify(['upgrade', '--from', s2v2, '--disk', disk]);
    expect(other.exitCode).toBe(2);
    expect(other.stderr).toMatch(/holds the site data of site-1, but the release is site site-2/);
    expect(other.stderr).toMatch(/--replace-site/);
    expect(sha(readFileSync(disk))).toBe(whole);
    const replaced = await ossify(['upgrade', '--from', s2v2, '--disk', disk, '--replace-site', '--json']);
    expect(replaced.exitCode, replaced.stderr).toBe(0);
    expect(JSON.parse(replaced.stdout)).toMatchObject({ slot: 'b', site: { name: 'site-2', written: true } });
    expect((await stateSeen(disk, 'other-site')).hostname).toBe('site-2.fleet.test\n');

    // Something else at the start of STATE (here: an ext4-like superblock at 1 KiB) is never overwritten.
    const foreign = await installFresh('foreign-state', base1);
    const state = (await layoutOf(foreign)).state!;
    const d = await openDisk(foreign, { write: true });
    await d.write(state.offset + 1024, noise(1024, 77));
    await d.close();
    const foreignSum = sha(readFileSync(foreign));
    const f = await ossify(['upgrade', '--from', s1v2, '--disk', foreign, '--replace-site']);
    expect(f.exitCode).toBe(2);
    expect(f.stderr).toMatch(/the STATE partition holds data that ossify did not write/);
    expect(sha(readFileSync(foreign))).toBe(foreignSum);
    expect((await diskStatus(foreign)).site).toEqual({ state: 'other' });
    // A release without site data still upgrades it (and leaves STATE as it is).
    const plain = await ossify(['upgrade', '--from', base3, '--disk', foreign]);
    expect(plain.exitCode, plain.stderr).toBe(0);
    expect((await readRange(foreign, state.offset + 1024, 1024)).equals(noise(1024, 77))).toBe(true);

    needTool('sgdisk', 'gdisk');
    const noState = copyDisk(await installFresh('no-state-src', base1), 'no-state');
    expect(run('sgdisk', ['-d', '4', noState]).code).toBe(0);
    const noStateSum = sha(readFileSync(noState));
    const n = await ossify(['upgrade', '--from', s1v2, '--disk', noState]);
    expect(n.exitCode).toBe(2);
    expect(n.stderr).toMatch(/carries site data for the STATE partition, but .* has none/);
    expect(sha(readFileSync(noState))).toBe(noStateSum);
  });

  it('reports a damaged seed and repairs it', async () => {
    const disk = await installFresh('damaged', s1v1);
    const state = (await layoutOf(disk)).state!;
    const d = await openDisk(disk, { write: true });
    await d.write(state.offset + 3, Buffer.from('#')); // the first header's checksum no longer holds
    await d.close();
    needTool('tar', 'tar');
    expect(run('tar', ['-tf', (await stateImage(disk, 'damaged')).file]).code).not.toBe(0);
    const s = await diskStatus(disk);
    expect(s.site).toEqual({ state: 'seed' });
    expect(s.warnings.join('\n')).toMatch(/STATE: the site data is damaged/);
    const r = await upgrade({ disk, source: await openReleaseDir(s1v1) });
    expect(r).toMatchObject({ alreadyInstalled: true, site: { name: 'site-1', written: true } });
    expect((await diskStatus(disk)).site).toMatchObject({ state: 'seed', name: 'site-1' });
    expect((await stateSeen(disk, 'repaired')).hostname).toBe('site-1.fleet.test\n');
  });

  // Kill points around the seed write: before it, after the pending marker, after the rest, and after it.
  const POINTS = ['write-site', 'write-site:512', 'write-site:1024', 'stage-entry', 'end'] as const;

  it.each(POINTS)('killed at %s: STATE holds the old seed, no seed or the new one, never a mixture; the previous release boots; a rerun finishes', async (point) => {
    const baseDisk = await installFresh(`crash-site-base-${point.replace(':', '-')}`, s1v1);
    const disk = copyDisk(baseDisk, `crash-site-${point.replace(':', '-')}`);
    const oldSeed = seedOf(s1v1);
    const newSeed = seedOf(s1v2b);
    const r = await ossify(['upgrade', '--from', s1v2b, '--disk', disk], { env: { [CRASH_ENV]: point } });
    expect(r.signal, r.stderr).toBe('SIGKILL');
    const s = await diskStatus(disk);
    expect(s.next).toBe(point === 'end' ? 'b' : 'a');
    expect(s.slots[0]).toMatchObject({ entry: { state: 'good', file: 'ossify-a.conf' }, release: { version: '1.0.0' } });
    const seen = await stateSeen(disk, `crash-${point.replace(':', '-')}`);
    if (point === 'write-site') {
      expect(seen.bytes.subarray(0, oldSeed.length).equals(oldSeed)).toBe(true);
      expect(seen.hostname).toBe('site-1.fleet.test\n');
    } else if (point.startsWith('write-site:')) {
      // The pending marker: the init applies nothing, tar finds no archive, status says why.
      expect(seen.bytes.subarray(0, SEED_PENDING_MARKER.length).toString('latin1')).toBe(SEED_PENDING_MARKER);
      expect(seen.initApplies).toBe(false);
      expect(seen.tarList).toBeUndefined();
      expect(s.site).toEqual({ state: 'pending' });
      expect(s.warnings.join('\n')).toMatch(/site data write was interrupted/);
    } else {
      expect(seen.bytes.subarray(0, newSeed.length).equals(newSeed)).toBe(true);
      expect(seen.hostname).toBe('site-1b.fleet.test\n');
    }
    const again = await ossify(['upgrade', '--from', s1v2b, '--disk', disk, '--json']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ slot: 'b', alreadyInstalled: point === 'end', site: { name: 'site-1', written: point.startsWith('write-site') } });
    const done = await diskStatus(disk, { verify: true });
    expect(done.next).toBe('b');
    expect(done.slots[1]).toMatchObject({ entry: { state: 'trying' }, release: { version: '2.0.0', verified: true } });
    expect(done.site).toEqual({ state: 'seed', name: 'site-1', size: newSeed.length, sha256: `sha256:${sha(newSeed)}` });
    expect(done.warnings).toEqual([]);
    expect((await stateSeen(disk, `crash-done-${point.replace(':', '-')}`)).hostname).toBe('site-1b.fleet.test\n');
    await oracles(disk);
  });
});

/** A running system as the script sees it: /proc, /sys and /dev (now with STATE) under one directory, the ESP mounted as a directory. */
async function fakeDevice(active: Slot, from: string, stateBytes?: Buffer) {
  needTool('busybox', 'busybox');
  const root = join(work.path, `device-${dirs++}`);
  const esp = join(root, 'esp');
  for (const d of ['proc', 'dev', 'esp/loader/entries', `esp/ossify/${active}`, 'payload/ossify']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'proc/cmdline'), `ossify.slot=${active} ossify.root=ROOT-${active.toUpperCase()} ${CMDLINE}\n`);
  writeFileSync(join(root, 'proc/mounts'), '');
  ['ESP', 'ROOT-A', 'ROOT-B', 'STATE'].forEach((label, i) => {
    const n = `vda${i + 1}`;
    mkdirSync(join(root, `sys/class/block/${n}`), { recursive: true });
    writeFileSync(join(root, `sys/class/block/${n}/uevent`), `MAJOR=254\nMINOR=${i + 1}\nDEVNAME=${n}\nDEVTYPE=partition\nPARTN=${i + 1}\nPARTNAME=${label}\n`);
    writeFileSync(join(root, `sys/class/block/${n}/size`), `${(2 * MiB) / 512}\n`);
    writeFileSync(join(root, `dev/${n}`), label === 'STATE' && stateBytes ? Buffer.concat([stateBytes, Buffer.alloc(2 * MiB - stateBytes.length)]) : Buffer.alloc(2 * MiB));
  });
  writeFileSync(join(esp, `loader/entries/ossify-${active}.conf`), entryConf({ slot: active, generation: 4, name: 'fake-os', version: '1.0.0', cmdline: CMDLINE }));
  writeFileSync(join(root, 'payload/ossify/install.sh'), DEVICE_SCRIPT);
  const payload = join(root, 'payload/ossify/payload');
  mkdirSync(payload);
  const src = await openReleaseDir(from);
  for (const n of Object.keys(src.release.artifacts)) copyFileSync(src.path(n), join(payload, n));
  writeFileSync(join(payload, 'release.json'), src.releaseJson);
  const env = { OSSIFY_ROOT: join(root, 'payload'), OSSIFY_BUSYBOX: '/usr/bin/busybox', OSSIFY_PROC: join(root, 'proc'), OSSIFY_SYS: join(root, 'sys'), OSSIFY_DEV: join(root, 'dev'), OSSIFY_ESP_DIR: esp, OSSIFY_MACHINE: 'x86_64' };
  const sh = (args: string[]) => run('busybox', ['sh', join(root, 'payload/ossify/install.sh'), ...args], { env });
  const state = () => readFileSync(join(root, 'dev/vda4'));
  /** Swaps the payload for another release's. */
  const repack = async (other: string) => {
    const o = await openReleaseDir(other);
    for (const n of Object.keys(o.release.artifacts)) copyFileSync(o.path(n), join(payload, n));
    writeFileSync(join(payload, 'release.json'), o.releaseJson);
  };
  return { root, esp, sh, state, repack, statePath: join(root, 'dev/vda4') };
}

describe('the on-device script with a site payload', () => {
  it('writes the seed to STATE with the upgrade, exactly the bytes the offline installer writes', async () => {
    const dev = await fakeDevice('a', s1v2);
    const r = dev.sh(['upgrade']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/site site-1: STATE has no site data yet/);
    expect(r.stderr).toMatch(/STATE: site site-1, \d+ bytes written and verified/);
    expect(r.stderr).toMatch(/slot b boots next with 3 tries/);
    const seed = seedOf(s1v2);
    expect(dev.state().subarray(0, seed.length).equals(seed)).toBe(true);
    expect(dev.state().subarray(seed.length).every((b) => b === 0)).toBe(true);
    needTool('tar', 'tar');
    expect(run('tar', ['-xOf', dev.statePath, 'etc/hostname']).stdout).toBe('site-1.fleet.test\n');
    expect(readFileSync(join(dev.esp, 'loader/entries/ossify-b+3.conf'), 'utf8')).toBe(entryConf({ slot: 'b', generation: 5, name: 'fake-os', version: '2.0.0', cmdline: CMDLINE }));
    // The offline upgrade from the same release writes the same STATE bytes.
    const disk = await installFresh('script-twin', base1);
    await upgrade({ disk, source: await openReleaseDir(s1v2) });
    const offline = await stateImage(disk, 'script-twin');
    expect(offline.bytes.subarray(0, seed.length).equals(dev.state().subarray(0, seed.length))).toBe(true);

    // `site` alone: nothing to do, then new site data; a base payload's upgrade leaves STATE alone.
    expect(dev.sh(['site']).stderr).toMatch(/STATE already holds this site data \(site-1\)/);
    await dev.repack(s1v2b);
    const s = dev.sh(['site']);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).toMatch(/applies at the next boot/);
    expect(dev.state().subarray(0, seedOf(s1v2b).length).equals(seedOf(s1v2b))).toBe(true);
    expect(run('tar', ['-xOf', dev.statePath, 'etc/hostname']).stdout).toBe('site-1b.fleet.test\n');
    const stateNow = sha(dev.state());
    await dev.repack(base3);
    writeFileSync(join(dev.root, 'proc/cmdline'), `ossify.slot=b ${CMDLINE}\n`);
    const b = dev.sh(['upgrade']);
    expect(b.code, b.stderr).toBe(0);
    expect(sha(dev.state())).toBe(stateNow);
    expect(dev.sh(['site']).stderr).toMatch(/this payload carries no site data/);
  });

  it('refuses another site\'s data unless --replace-site and data it did not write; finishes an interrupted write', async () => {
    const dev = await fakeDevice('a', s2v2, seedOf(s1v1));
    const espBefore = run('sh', ['-c', 'cd "$1" && find . -type f | sort', 'sh', dev.esp]).stdout;
    const rootB = () => sha(readFileSync(join(dev.root, 'dev/vda3')));
    const rootBBefore = rootB();
    const stateBefore = sha(dev.state());
    const r = dev.sh(['upgrade']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/holds the site data of site-1, but the payload is site site-2/);
    // Refused before anything was written.
    expect(run('sh', ['-c', 'cd "$1" && find . -type f | sort', 'sh', dev.esp]).stdout).toBe(espBefore);
    expect(rootB()).toBe(rootBBefore);
    expect(sha(dev.state())).toBe(stateBefore);
    const ok = dev.sh(['upgrade', '--replace-site']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(run('tar', ['-xOf', dev.statePath, 'etc/hostname']).stdout).toBe('site-2.fleet.test\n');

    const foreign = noise(4096, 3);
    const f = await fakeDevice('a', s1v2, foreign);
    const fr = f.sh(['site', '--replace-site']);
    expect(fr.code).toBe(1);
    expect(fr.stderr).toMatch(/holds data that ossify did not write/);
    expect(f.state().subarray(0, 4096).equals(foreign)).toBe(true);

    // What a killed write leaves: the marker, then part of a seed behind it.
    const pending = Buffer.concat([Buffer.from(SEED_PENDING_MARKER), Buffer.alloc(512 - SEED_PENDING_MARKER.length), seedOf(s1v2).subarray(512, 1024)]);
    const p = await fakeDevice('a', s1v2, pending);
    const pr = p.sh(['site']);
    expect(pr.code, pr.stderr).toBe(0);
    expect(pr.stderr).toMatch(/finishing an interrupted site data write/);
    expect(p.state().subarray(0, seedOf(s1v2).length).equals(seedOf(s1v2))).toBe(true);
  });
});
