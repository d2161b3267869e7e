import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadInput } from '../../builder/inputs/index.ts';
import { lockFileFor, openLock, readLock } from '../../builder/lock/index.ts';
import type { BuildRecord } from '../../builder/release/build-json.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { initramfsCpio, requireTool, runOk } from '../helpers/oracle.ts';

/** The input cache the e2e tests share, so the kernel package is downloaded once per machine. */
const CACHE = join(PROJECT_ROOT, 'out', 'cache');

let dir: string;
let profile: string;
let tar: string;

const PROFILE = (extraRootfs = '') =>
  [
    `extends: ${join(PROJECT_ROOT, 'profiles', 'default.yaml')}`,
    'name: locked',
    'initramfs:',
    '  programs:',
    '    - { path: usr/sbin/veritysetup, from: { deb: cryptsetup-bin, depends: true } }',
    'rootfs:',
    '  inputs:',
    '    - deb: busybox-static',
    '    - tar: extra.tar.gz',
    `    - dir: ${join(PROJECT_ROOT, 'overlays', 'default')}`,
    extraRootfs,
    '  programs:',
    '    - { path: sbin/veritysetup, from: { deb: cryptsetup-bin, depends: true } }',
    '',
  ].join('\n');

async function build(out: string, extra: string[] = []) {
  return ossify(['build', profile, '--out', out, '--cache-dir', CACHE, '--json', ...extra]);
}

beforeAll(async () => {
  requireTool('tar', 'tar');
  dir = await mkdtemp(join(tmpdir(), 'ossify-lock-'));
  await mkdir(join(dir, 'extra', 'etc'), { recursive: true });
  await writeFile(join(dir, 'extra', 'etc', 'motd'), 'locked\n');
  tar = join(dir, 'extra.tar.gz');
  runOk('tar', ['--sort=name', '--owner=0', '--group=0', '--mtime=@0', '-C', join(dir, 'extra'), '-czf', tar, '.']);
  profile = join(dir, 'site.yaml');
  await writeFile(profile, PROFILE());
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('ossify lock and build --frozen', () => {
  it('lock, build, change nothing, build --frozen: identical artifacts', async () => {
    const locked = await ossify(['lock', profile]);
    expect(locked.exitCode, locked.stderr).toBe(0);
    expect(locked.stdout).toMatch(/^wrote .*site\.lock\.yaml \(5 sources, 5 resolved now\)/);
    const file = lockFileFor(profile);
    expect(file).toBe(join(dir, 'site.lock.yaml'));
    const doc = parse(await readFile(file, 'utf8')) as { sources: { source: Record<string, unknown>; usedBy: string[]; deb?: { package: string; sha256: string }[]; tar?: { sha256: string } }[] };
    const bySource = new Map(doc.sources.map((s) => [JSON.stringify(s.source), s]));
    expect(bySource.get(JSON.stringify({ tar: 'extra.tar.gz' }))?.tar?.sha256).toMatch(/^[0-9a-f]{64}$/);
    const crypt = bySource.get(JSON.stringify({ deb: ['cryptsetup-bin'], depends: true, arch: 'amd64' }))!;
    expect(crypt.usedBy).toEqual(['initramfs.programs[0].from', 'rootfs.programs[0].from']);
    expect(crypt.deb!.map((p) => p.package)).toEqual(expect.arrayContaining(['cryptsetup-bin', 'libcryptsetup12', 'libc6', 'libssl3']));
    expect(bySource.get(JSON.stringify({ deb: ['busybox-static'], depends: false, arch: 'amd64' }))?.usedBy).toEqual(['initramfs.busybox', 'rootfs.inputs[0]']);

    const a = await build(join(dir, 'out-a'));
    expect(a.exitCode, a.stderr).toBe(0);
    const b = await build(join(dir, 'out-b'), ['--frozen']);
    expect(b.exitCode, b.stderr).toBe(0);
    const ra = JSON.parse(a.stdout) as BuildRecord & { outDir: string };
    const rb = JSON.parse(b.stdout) as BuildRecord;
    expect(rb.artifacts).toEqual(ra.artifacts);
    expect(rb.sources).toEqual(ra.sources);
    expect(ra.sources).toContainEqual(expect.objectContaining({ kind: 'deb', name: 'libcryptsetup12' }));

    // The verified-boot initramfs gets veritysetup and its libraries.
    requireTool('cpio', 'cpio');
    const names = runOk('cpio', ['-t', '--quiet'], { input: initramfsCpio(await readFile(join(ra.outDir, 'initramfs.img'))) }).split('\n');
    expect(names).toEqual(expect.arrayContaining(['usr/sbin/veritysetup', 'sbin/veritysetup', 'lib64/ld-linux-x86-64.so.2', 'lib/x86_64-linux-gnu/libcryptsetup.so.12']));

    requireTool('unsquashfs', 'squashfs-tools');
    const rootfs = runOk('unsquashfs', ['-l', '-d', '', join(ra.outDir, 'rootfs.squashfs')]).split('\n');
    expect(rootfs).toEqual(expect.arrayContaining(['/sbin/veritysetup', '/lib64/ld-linux-x86-64.so.2', '/usr/lib/x86_64-linux-gnu/libcrypto.so.3', '/sbin/init']));

    const again = await ossify(['lock', profile]);
    expect(again.stdout).toMatch(/^unchanged: .*\(5 sources, 0 resolved now\)/);
  }, 300_000);

  it('--frozen refuses a changed local archive before building anything', async () => {
    const before = await readFile(tar);
    await writeFile(join(dir, 'extra', 'etc', 'motd'), 'changed\n');
    runOk('tar', ['--sort=name', '--owner=0', '--group=0', '--mtime=@0', '-C', join(dir, 'extra'), '-czf', tar, '.']);
    try {
      const out = join(dir, 'out-c');
      const r = await build(out, ['--frozen']);
      expect(r.exitCode).toBe(2);
      // Caught before the build starts: nothing fetched, nothing written.
      expect(r.stderr).toMatch(new RegExp(`error: --frozen: the profile and its lock file .*site\\.lock\\.yaml disagree:\\n  ${tar} has sha256 [0-9a-f]{64}, the lock says [0-9a-f]{64}`));
      expect(r.stderr).toMatch(/hint: run `ossify lock`/);
      expect(await readdir(out).catch(() => [])).toEqual([]);

      // Unfrozen, the build follows the file as it is now and says the lock is stale.
      const loaded = await loadProfile(profile, { env: {} });
      const pins = (await openLock(loaded, false))!;
      const input = loaded.profile.rootfs.inputs[1]!;
      await loadInput(input, { cacheDir: CACHE, lock: pins });
      expect(pins.warnings).toEqual([expect.stringMatching(/tar:.*extra\.tar\.gz disagrees with the lock file .*; using it as it is now/)]);
    } finally {
      await writeFile(tar, before);
    }
  });

  it('--frozen fails before building when the profile has inputs the lock lacks, or the lock is missing', async () => {
    await writeFile(profile, PROFILE('    - deb: kmod'));
    try {
      const r = await build(join(dir, 'out-d'), ['--frozen']);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain('the profile and its lock file');
      expect(r.stderr).toMatch(/not in the lock: rootfs\.inputs\[3\] \(deb:kmod\)/);
      expect(await readdir(join(dir, 'out-d')).catch(() => [])).toEqual([]);
    } finally {
      await writeFile(profile, PROFILE());
    }
    const lone = join(dir, 'lone.yaml');
    await writeFile(lone, PROFILE());
    const r = await ossify(['build', lone, '--out', join(dir, 'out-e'), '--frozen']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--frozen: there is no lock file .*lone\.lock\.yaml/);
  });

  it('refuses a hand-edited lock file with a clear message', async () => {
    const file = lockFileFor(profile);
    const good = await readFile(file, 'utf8');
    try {
      await writeFile(file, good.replace(/sha256: ([0-9a-f]{64})/, 'sha256: nothex'));
      await expect(readLock(file)).rejects.toThrow(/lock file .*site\.lock\.yaml is malformed at sources\.\d+/);
    } finally {
      await writeFile(file, good);
    }
  });
});
