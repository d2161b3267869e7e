import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteStageCache } from '../../builder/cache/remote.ts';
import { StageCache } from '../../builder/cache/store.ts';
import { readIndex, readManifest } from '../../builder/oci/layout.ts';
import { ANNOTATION, type ImageManifest } from '../../builder/oci/media-types.ts';
import { pullRelease } from '../../builder/release/pull.ts';
import { pushBuild } from '../../builder/release/push.ts';
import { openDisk } from '../../builder/installer/disk.ts';
import { probeLayout } from '../../builder/installer/layout.ts';
import { build, type BuildResult } from '../../builder/pipeline.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import { buildMatrix, type MatrixBuild } from '../../builder/matrix.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';
import { startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * A fleet in small: the tiny profile (test/fixtures/fleet) and three sites of it, built in one
 * process with a shared stage cache, pushed to a real docker-registry, and rebuilt on "another
 * machine" (an empty stage cache) from the registry cache.
 */

const INPUTS = join(PROJECT_ROOT, 'out', 'cache');
const root = mkdtempSync(join(tmpdir(), 'ossify-site-build-'));
const fixture = join(root, 'fixture');
const stages = join(root, 'stages');
const files = () => [join(fixture, 'tiny.yaml'), ...[1, 2, 3].map((i) => join(fixture, 'sites', `site-${i}.yaml`))];
const BASE_STAGES = ['kernel input', 'boot inputs', 'initramfs', 'rootfs tree', 'sbom', 'squashfs', 'kernel', 'disk'];

let builds: MatrixBuild[];
let base: BuildResult;
let sites: BuildResult[];
let registry: RegistryHandle;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function region(file: string, offset: number, size: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(size);
    await fh.read(buf, 0, size, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

function manifestOf(r: BuildResult): Promise<ImageManifest> {
  return readIndex(r.installer.layoutDir).then((idx) => readManifest(r.installer.layoutDir, idx.manifests[0]!));
}

beforeAll(async () => {
  requireTool('bsdtar', 'libarchive-tools');
  requireTool('sgdisk', 'gdisk');
  cpSync(join(PROJECT_ROOT, 'test', 'fixtures', 'fleet'), fixture, { recursive: true });
  registry = await startRegistry();
  const r = await buildMatrix(files(), { jobs: 2, outRoot: join(root, 'out'), cacheDir: INPUTS, stageCacheDir: stages });
  if (r.failures.length) throw r.failures[0]!.error;
  builds = r.builds;
  base = builds[0]!.result;
  sites = builds.slice(1).map((b) => b.result);
}, 300_000);

afterAll(async () => {
  await registry?.stop();
  rmSync(root, { recursive: true, force: true });
});

describe('a fleet of sites', () => {
  it('computes the stages the sites share once', () => {
    for (const s of BASE_STAGES) {
      expect(builds.map((b) => b.result.cache[s]).filter((x) => x === 'miss'), s).toHaveLength(1);
    }
    for (const b of sites) for (const s of ['site', 'site seed', 'installer image']) expect(b.cache[s], s).toBe('miss');
  });

  it('gives every site the base\'s rootfs, kernel and initramfs, byte for byte', () => {
    for (const a of ['rootfs.squashfs', 'vmlinuz', 'initramfs.img', 'sbom.spdx.json']) {
      const digests = new Set(builds.map((b) => b.result.record.artifacts[a]?.sha256 ?? sha(readFileSync(join(b.result.outDir, a)))));
      expect(digests.size, a).toBe(1);
    }
    for (const s of sites) {
      expect(s.record.baseDigest).toBe(base.record.profileDigest);
      expect(s.record.artifacts['site.tar']!.size).toBeLessThan(16 << 10);
      expect(s.outDir).toMatch(/tiny-1\.0\.0-site-\d$/);
    }
  });

  it('gives every site the base\'s disk, its seed at the start of STATE aside', async () => {
    const state = base.record.partitions.find((p) => p.label === 'STATE')!;
    const prefix = async (r: BuildResult) => sha(await region(join(r.outDir, 'disk.raw'), 0, state.offset));
    const basePrefix = await prefix(base);
    for (const s of sites) {
      expect(s.record.partitions).toEqual(base.record.partitions);
      expect(await prefix(s)).toBe(basePrefix);
      const disk = join(s.outDir, 'disk.raw');
      expect(runOk('sgdisk', ['-v', disk])).toMatch(/No problems found/);
      const seed = readFileSync(join(s.outDir, 'site.tar'));
      expect((await region(disk, state.offset, seed.length)).equals(seed)).toBe(true);
      // What the rootfs init reads: a tar straight off the partition (it stops at the end-of-archive blocks).
      const part = join(root, `${s.record.site!.name}-state.img`);
      writeFileSync(part, await region(disk, state.offset, state.size));
      const list = runOk('bsdtar', ['-tvf', part]);
      expect(list).toContain('etc/ossify/site.env');
      expect(runOk('bsdtar', ['-xOf', part, 'etc/hostname'])).toBe(`${s.record.site!.name}.fleet.test\n`);
    }
    // The base's STATE is empty.
    expect((await region(join(base.outDir, 'disk.raw'), state.offset, 4096)).every((b) => b === 0)).toBe(true);
  });

  it('puts each site\'s data in its own small layer over the base\'s layers', async () => {
    const baseManifest = await manifestOf(base);
    expect(baseManifest.layers).toHaveLength(2);
    const siteLayers = new Set<string>();
    for (const s of sites) {
      const m = await manifestOf(s);
      expect(m.layers.map((l) => l.annotations?.[ANNOTATION.ossifyLayer])).toEqual(['base', 'payload', 'site']);
      expect(m.layers.slice(0, 2).map((l) => l.digest)).toEqual(baseManifest.layers.map((l) => l.digest));
      expect(m.layers[2]!.size).toBeLessThan(4 << 10);
      siteLayers.add(m.layers[2]!.digest);
      expect(JSON.parse(m.annotations![ANNOTATION.ossifyRelease]!).profileDigest).toBe(s.record.profileDigest);
    }
    expect(siteLayers.size).toBe(3);
  });

  it('pushes a site as a few KiB once the registry holds the base, and pulls back verified with its seed', async () => {
    const repo = `${registry.host}/fleet/tiny`;
    const opts = { insecure: true, blobCache: false as const, credentials: null };
    const first = await pushBuild(base.outDir, `${repo}:base`, opts);
    expect(first.stats.blobBytesSent).toBeGreaterThan(1 << 20);
    for (const s of sites) {
      const r = await pushBuild(s.outDir, `${repo}:${s.record.site!.name}`, opts);
      expect(r.stats.blobBytesSent).toBeLessThan(16 << 10);
      expect(r.digest).toBe(s.installer.manifestDigest);
    }
    requireTool('skopeo', 'skopeo');
    const raw = runOk('skopeo', ['inspect', '--raw', ...registry.skopeoArgs('inspect'), `docker://${repo}@${sites[1]!.installer.manifestDigest}`]);
    expect((JSON.parse(raw) as ImageManifest).layers).toHaveLength(3);
    const pulled = await pullRelease(`${repo}@${sites[1]!.installer.manifestDigest}`, join(root, 'pulled'), opts);
    // Every file the site's release.json lists (the OS payload, boot files, site.tar), and release.json.
    expect(pulled.files.map((f) => f.name)).toEqual([...Object.keys(pulled.release.artifacts), 'release.json'].sort());
    expect(pulled.files.map((f) => f.name)).toEqual(expect.arrayContaining(['initramfs.img', 'release.json', 'rootfs.squashfs', 'site.tar', 'vmlinuz']));
    expect(pulled.release.baseDigest).toBe(base.record.profileDigest);
    expect(pulled.release.profileDigest).toBe(sites[1]!.record.profileDigest);
    expect(pulled.release.artifacts['site.tar']!.sha256).toBe(sites[1]!.record.artifacts['site.tar']!.sha256);
    expect(readFileSync(join(root, 'pulled', 'site.tar')).equals(readFileSync(join(sites[1]!.outDir, 'site.tar')))).toBe(true);
  });

  it('pushes every build of a matrix with its SBOM attached, as a single build does', async () => {
    const repo = `${registry.host}/fleet/matrix`;
    const r = await ossify(['build', ...files(), '--out', join(root, 'out-matrix'), '--cache-dir', INPUTS, '--push', repo, '--insecure', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const built = JSON.parse(r.stdout) as { outDir: string; pushed: string; installer: { manifestDigest: string } }[];
    expect(built).toHaveLength(4);
    // Read back with plain HTTP, not ossify's client: distribution 2.x has no referrers API,
    // so the referrers are listed in the index under the digest's fallback tag.
    const get = async (path: string, accept: string) => {
      const res = await fetch(`http://${registry.host}/v2/fleet/matrix/${path}`, { headers: { accept } });
      expect(res.status, path).toBe(200);
      return new Uint8Array(await res.arrayBuffer());
    };
    const json = async <T>(path: string, accept: string) => JSON.parse(new TextDecoder().decode(await get(path, accept))) as T;
    for (const b of built) {
      const digest = b.installer.manifestDigest;
      expect(b.pushed).toBe(`${repo}@${digest}`);
      const index = await json<{ manifests: { digest: string; artifactType?: string }[] }>(`manifests/${digest.replace(':', '-')}`, 'application/vnd.oci.image.index.v1+json');
      const sboms = index.manifests.filter((m) => m.artifactType === 'application/spdx+json');
      expect(sboms, b.outDir).toHaveLength(1);
      const artifact = await json<{ subject: { digest: string }; layers: { digest: string }[] }>(`manifests/${sboms[0]!.digest}`, 'application/vnd.oci.image.manifest.v1+json');
      expect(artifact.subject.digest).toBe(digest);
      const sbom = await get(`blobs/${artifact.layers[0]!.digest}`, '*/*');
      expect(Buffer.from(sbom).equals(readFileSync(join(b.outDir, 'sbom.spdx.json'))), b.outDir).toBe(true);
    }
  }, 300_000);

  it('installs a site from its build output as its disk.raw, byte for byte, and from its image with its seed in STATE', async () => {
    const site = sites[1]!;
    const fromDir = join(root, 'installed-from-dir.raw');
    const i = await ossify(['install', '--from', site.outDir, '--disk', fromDir, '--cache-dir', INPUTS, '--json']);
    expect(i.exitCode, i.stderr).toBe(0);
    expect(JSON.parse(i.stdout).site).toEqual({ name: site.record.site!.name, bytes: site.record.artifacts['site.tar']!.size });
    expect(sha(readFileSync(fromDir))).toBe(sha(readFileSync(join(site.outDir, 'disk.raw'))));
    // From the registry (release.json records the build's partition sizes and boot settings):
    // the site's disk.raw again, byte for byte, so the same GUIDs and the seed in STATE.
    const pushed = await pushBuild(site.outDir, `${registry.host}/fleet/tiny:${site.record.site!.name}`, { insecure: true, blobCache: false as const, credentials: null });
    const fromImage = join(root, 'installed-from-image.raw');
    const r = await ossify(['install', '--image', pushed.reference, '--insecure', '--disk', fromImage, '--cache-dir', INPUTS]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(sha(readFileSync(fromImage))).toBe(sha(readFileSync(join(site.outDir, 'disk.raw'))));
    expect(runOk('sgdisk', ['-v', fromImage])).toMatch(/No problems found/);
    const guids = (disk: string) => runOk('sgdisk', ['-p', disk]).match(/Disk identifier \(GUID\): (\S+)/)![1]! + [1, 2, 3, 4].map((n) => runOk('sgdisk', ['-i', String(n), disk]).match(/unique GUID: (\S+)/)![1]).join(' ');
    expect(guids(fromImage)).toBe(guids(join(site.outDir, 'disk.raw')));
    const seed = readFileSync(join(site.outDir, 'site.tar'));
    const stateOf = async (disk: string) => {
      const d = await openDisk(disk, { write: false });
      try {
        return (await probeLayout(d)).state!;
      } finally {
        await d.close();
      }
    };
    const state = await stateOf(fromImage);
    expect((await region(fromImage, state.offset, seed.length)).equals(seed)).toBe(true);
    const part = join(root, 'installed-state.img');
    writeFileSync(part, await region(fromImage, state.offset, state.size));
    expect(runOk('bsdtar', ['-xOf', part, 'etc/hostname'])).toBe(`${site.record.site!.name}.fleet.test\n`);
    // A site's image upgrades another site's machine only when asked to.
    const other = sites[2]!;
    const otherImage = await pushBuild(other.outDir, `${registry.host}/fleet/tiny:${other.record.site!.name}`, { insecure: true, blobCache: false as const, credentials: null });
    const refused = await ossify(['upgrade', '--image', otherImage.reference, '--insecure', '--disk', fromImage]);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(new RegExp(`holds the site data of ${site.record.site!.name}, but the release is site ${other.record.site!.name}`));
    const moved = await ossify(['upgrade', '--image', otherImage.reference, '--insecure', '--disk', fromImage, '--replace-site', '--json']);
    expect(moved.exitCode, moved.stderr).toBe(0);
    // Same OS: only STATE changes.
    expect(JSON.parse(moved.stdout)).toMatchObject({ alreadyInstalled: true, site: { name: other.record.site!.name, written: true } });
    const otherSeed = readFileSync(join(other.outDir, 'site.tar'));
    expect((await region(fromImage, state.offset, otherSeed.length)).equals(otherSeed)).toBe(true);
    writeFileSync(part, await region(fromImage, state.offset, state.size));
    expect(runOk('bsdtar', ['-xOf', part, 'etc/hostname'])).toBe(`${other.record.site!.name}.fleet.test\n`);
  }, 120_000);

  it('builds on another machine from the registry cache, making nothing', async () => {
    const cacheRepo = `${registry.host}/fleet/cache`;
    const to = await RemoteStageCache.open(cacheRepo, { insecure: true, credentials: null });
    const loaded = await loadProfile(join(fixture, 'sites', 'site-2.yaml'));
    // This machine: a build whose stages (all hits here) go to the registry.
    const here = await build(loaded, { outRoot: join(root, 'out-push'), cacheDir: INPUTS, stageCacheDir: stages, progress: 'silent', remoteCache: { to } });
    await to.close();
    // Another machine: no stage cache at all, only the registry's.
    const from = await RemoteStageCache.open(cacheRepo, { insecure: true, credentials: null });
    const empty = join(root, 'stages-other-machine');
    const there = await build(loaded, { outRoot: join(root, 'out-other'), cacheDir: INPUTS, stageCacheDir: empty, progress: 'silent', remoteCache: { from } });
    await from.close();
    for (const s of [...BASE_STAGES, 'site', 'site seed', 'installer image']) expect(there.cache[s], s).toBe('remote');
    expect(there.record.artifacts).toEqual(here.record.artifacts);
    expect(there.installer.manifestDigest).toBe(here.installer.manifestDigest);
    // And it is now local there.
    const again = await build(loaded, { outRoot: join(root, 'out-other'), cacheDir: INPUTS, stageCacheDir: empty, progress: 'silent' });
    expect(Object.values(again.cache).every((s) => s === 'hit')).toBe(true);
    expect((await StageCache.at(empty).list()).length).toBeGreaterThan(10);
  });
});
