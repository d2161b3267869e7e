import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StageCache } from '../../builder/cache/store.ts';
import { build, type BuildResult } from '../../builder/pipeline.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

/**
 * The stage cache on real builds of a small profile (test/fixtures/fleet/tiny.yaml): the
 * inputs come from the shared download cache, the stages go to a cache of this test's own.
 */

const INPUTS = join(PROJECT_ROOT, 'out', 'cache');
const root = mkdtempSync(join(tmpdir(), 'ossify-cache-build-'));
const stages = join(root, 'stages');
const fixture = join(root, 'fixture');
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
async function buildTiny(opts: { stageCache?: boolean; profile?: string; env?: Record<string, string> } = {}): Promise<BuildResult> {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  try {
    const loaded = await loadProfile(opts.profile ?? join(fixture, 'tiny.yaml'));
    return await build(loaded, { outRoot: join(root, `out-${n++}`), cacheDir: INPUTS, stageCacheDir: stages, progress: 'silent', ...(opts.stageCache === false ? { stageCache: false } : {}) });
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const STEPS = ['kernel input', 'boot inputs', 'initramfs', 'rootfs tree', 'sbom', 'squashfs', 'kernel', 'disk', 'installer image'];
const only = (r: BuildResult, status: string) => STEPS.filter((s) => r.cache[s] === status);

let cold: BuildResult;

beforeAll(async () => {
  requireTool('sgdisk', 'gdisk');
  cpSync(join(PROJECT_ROOT, 'test', 'fixtures', 'fleet'), fixture, { recursive: true });
  cold = await buildTiny();
}, 300_000);

describe('the stage cache on a real build', () => {
  it('misses every stage on a cold cache', () => {
    expect(only(cold, 'miss')).toEqual(STEPS);
  });

  it('hits every stage when nothing changed, and gives the same bytes', async () => {
    const warm = await buildTiny();
    expect(only(warm, 'hit')).toEqual(STEPS);
    expect(warm.record.artifacts).toEqual(cold.record.artifacts);
    expect(warm.installer.manifestDigest).toBe(cold.installer.manifestDigest);
    expect(warm.record.sources).toEqual(cold.record.sources);
    for (const a of ['rootfs.squashfs', 'vmlinuz', 'initramfs.img', 'sbom.spdx.json', 'provenance.intoto.json']) {
      expect(readFileSync(join(warm.outDir, a)).equals(readFileSync(join(cold.outDir, a))), a).toBe(true);
    }
    // The restored disk keeps its holes, and sgdisk finds it sound.
    const disk = join(warm.outDir, 'disk.raw');
    expect(statSync(disk).blocks * 512).toBeLessThan(statSync(disk).size / 4);
    expect(runOk('sgdisk', ['-v', disk])).toMatch(/No problems found/);
  });

  it('after one overlay file changed, reruns only the stages downstream of the rootfs', async () => {
    const init = join(fixture, 'overlay', 'sbin', 'init');
    const before = readFileSync(init, 'utf8');
    writeFileSync(init, `${before}echo changed\n`, { mode: 0o755 });
    try {
      const r = await buildTiny();
      expect(only(r, 'hit')).toEqual(['kernel input', 'boot inputs', 'initramfs', 'kernel']);
      expect(only(r, 'miss')).toEqual(['rootfs tree', 'sbom', 'squashfs', 'disk', 'installer image']);
      expect(r.record.artifacts['rootfs.squashfs']).not.toEqual(cold.record.artifacts['rootfs.squashfs']);
      expect(r.record.artifacts['initramfs.img']).toEqual(cold.record.artifacts['initramfs.img']);
    } finally {
      writeFileSync(init, before, { mode: 0o755 });
    }
    // And back: the first build's entries still answer.
    expect(only(await buildTiny(), 'hit')).toEqual(STEPS);
  });

  it('makes on demand what a hit stage could not store (the kernel tree for a changed initramfs)', async () => {
    const variant = join(fixture, 'tiny-zstd.yaml');
    writeFileSync(variant, 'extends: tiny.yaml\ninitramfs:\n  compression: none\n');
    const r = await buildTiny({ profile: variant });
    expect(r.cache['kernel input']).toBe('hit');
    expect(r.cache['initramfs']).toBe('miss');
    // The same profile built with --no-cache, as the command line does it: every step runs, the same bytes.
    const cli = await ossify(['build', variant, '--no-cache', '--out', join(root, 'out-cli'), '--cache-dir', INPUTS, '--json']);
    expect(cli.exitCode, cli.stderr).toBe(0);
    const plain = JSON.parse(cli.stdout) as BuildResult['record'] & { cache: Record<string, string>; installer: { manifestDigest: string } };
    expect(STEPS.filter((s) => plain.cache[s] === 'off')).toEqual(STEPS);
    expect(r.record.artifacts).toEqual(plain.artifacts);
    expect(r.installer.manifestDigest).toBe(plain.installer.manifestDigest);
  });

  it('turns itself off for the reproducibility test hook', async () => {
    const r = await buildTiny({ env: { OSSIFY_TEST_NONDETERMINISM: '1' } });
    expect(only(r, 'off')).toEqual(STEPS);
  });

  it('refuses a corrupted blob and makes the stage again', async () => {
    const cache = StageCache.at(stages);
    const squashfs = cold.record.artifacts['rootfs.squashfs']!;
    const path = cache.blobPath(squashfs.sha256);
    const bytes = readFileSync(path);
    bytes.writeUInt8(bytes.readUInt8(bytes.length >> 1) ^ 0xff, bytes.length >> 1);
    writeFileSync(path, bytes);
    const r = await buildTiny();
    expect(r.cache.squashfs).toBe('miss');
    expect(r.record.artifacts['rootfs.squashfs']).toEqual(squashfs);
    expect(cache.warnings.join('\n')).toMatch(/corrupt/);
    expect(only(await buildTiny(), 'hit')).toEqual(STEPS);
  });
});
