import { execa } from 'execa';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RemoteStageCache } from '../builder/cache/remote.ts';
import { StageCache } from '../builder/cache/store.ts';
import { readIndex, readManifest } from '../builder/oci/layout.ts';
import { pushBuild } from '../builder/release/push.ts';
import { build, type BuildOptions, type BuildResult } from '../builder/pipeline.ts';
import { loadProfile } from '../builder/profile/load.ts';
import { buildMatrix } from '../builder/matrix.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import type { BenchRow } from './types.ts';

/**
 * Issue 9's acceptance numbers, in one run on this machine (docs/fleet.md):
 *
 * - the default profile built cold (a stage cache of this run's own; inputs from the shared
 *   download cache), then with nothing changed (in process and as the CLI), then after one
 *   overlay file changed;
 * - OSSIFY_BENCH_SITES (default 200) generated sites of the default profile built in one
 *   process (`--jobs 2`), each pushed to a local docker-registry after the base image;
 * - a second machine (an empty cache directory) building a site from the registry cache.
 *
 * Each row is ossify's number against the one it is measured against (a cold build, one whole
 * image, …); `ratio` = ours / theirs.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'ossify.js');
const DEFAULT = join(ROOT, 'profiles', 'default.yaml');
const INPUTS = join(ROOT, 'out', 'cache');

const STEPS_THAT_COMPRESS = ['initramfs', 'squashfs', 'installer image'];

function cacheDirIn(dir: string): string {
  // The stage cache is this run's own; the downloaded inputs (debs) are the shared ones.
  const c = join(dir, 'cache');
  mkdirSync(c, { recursive: true });
  for (const d of ['blobs', 'deb', 'tmp']) {
    mkdirSync(join(INPUTS, d), { recursive: true });
    symlinkSync(join(INPUTS, d), join(c, d));
  }
  return c;
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

function statuses(r: BuildResult, want: string): string[] {
  return Object.entries(r.cache).filter(([, s]) => s !== want).map(([k, s]) => `${k}=${s}`);
}

async function imageBytes(r: BuildResult): Promise<number> {
  const idx = await readIndex(r.installer.layoutDir);
  const m = await readManifest(r.installer.layoutDir, idx.manifests[0]!);
  return idx.manifests[0]!.size + m.config.size + m.layers.reduce((n, l) => n + l.size, 0);
}

async function duBytes(dir: string): Promise<number> {
  // Allocated bytes (a disk image is sparse: its apparent size would count the holes).
  const r = await execa('du', ['-s', '--block-size=1', dir]);
  return Number(r.stdout.split(/\s/)[0]);
}

export async function benchFleet(opts: { sites?: number; jobs?: number } = {}): Promise<BenchRow[]> {
  const sites = opts.sites ?? Number(process.env.OSSIFY_BENCH_SITES ?? 200);
  const jobs = opts.jobs ?? 2;
  const work = mkdtempSync(join(tmpdir(), 'ossify-bench-fleet-'));
  const log = (line: string) => process.stderr.write(`[fleet] ${line}\n`);
  const rows: BenchRow[] = [];
  const row = (name: string, ours: number, theirs: number, unit: string) => rows.push({ name, ours, theirs, ratio: ours / theirs, unit });
  const registry = await startRegistry();
  try {
    const cacheDir = cacheDirIn(work);
    const opts1 = (out: string): BuildOptions => ({ outRoot: join(work, out), cacheDir, progress: 'silent' });
    const loaded = await loadProfile(DEFAULT);

    // 1. Cold, then nothing changed.
    const cold = await timed(() => build(loaded, opts1('out')));
    log(`cold build ${Math.round(cold.ms)} ms: ${JSON.stringify(cold.value.cache)}`);
    let warmMs = Infinity;
    for (let i = 0; i < 3; i++) {
      const t = await timed(async () => build(await loadProfile(DEFAULT), opts1('out')));
      const off = statuses(t.value, 'hit');
      if (off.length) throw new Error(`a rebuild with nothing changed did not hit every stage: ${off.join(', ')}`);
      if (JSON.stringify(t.value.record.artifacts) !== JSON.stringify(cold.value.record.artifacts)) throw new Error('a warm rebuild gave other bytes');
      warmMs = Math.min(warmMs, t.ms);
    }
    log(`no-change rebuild ${Math.round(warmMs)} ms (best of 3, in process, profile loading included)`);
    row('default: no-change rebuild, in process (ms) vs cold', warmMs, cold.ms, 'ms');

    const cli = async (args: string[]) => timed(() => execa('node', [BIN, ...args], { env: { CI: '1' } }));
    let cliMs = Infinity;
    let startMs = Infinity;
    for (let i = 0; i < 3; i++) {
      cliMs = Math.min(cliMs, (await cli(['build', DEFAULT, '--out', join(work, 'out'), '--cache-dir', cacheDir, '--json'])).ms);
      startMs = Math.min(startMs, (await cli(['--version'])).ms);
    }
    log(`no-change rebuild as the CLI ${Math.round(cliMs)} ms; \`ossify --version\` ${Math.round(startMs)} ms`);
    row('default: no-change rebuild, CLI wall (ms) vs CLI start-up', cliMs, startMs, 'ms');

    // 2. One overlay file changed (a copy of overlays/default, so the checkout is left alone).
    const pdir = join(work, 'profile');
    cpSync(join(ROOT, 'overlays', 'default'), join(pdir, 'overlay'), { recursive: true });
    const text = readFileSync(DEFAULT, 'utf8').replace(/dir: \.\.\/overlays\/default/, 'dir: overlay');
    if (!text.includes('dir: overlay')) throw new Error('profiles/default.yaml no longer names ../overlays/default');
    writeFileSync(join(pdir, 'default.yaml'), text.replace(/\$schema=\.\/schema\.json/, ''));
    const before = await build(await loadProfile(join(pdir, 'default.yaml')), opts1('out-overlay'));
    log(`copy of the default profile: ${JSON.stringify(before.cache)}`);
    const init = join(pdir, 'overlay', 'sbin', 'init');
    writeFileSync(init, `${readFileSync(init, 'utf8')}# changed\n`, { mode: 0o755 });
    const changed = await timed(async () => build(await loadProfile(join(pdir, 'default.yaml')), opts1('out-overlay')));
    const reran = Object.entries(changed.value.cache).filter(([, s]) => s === 'miss').map(([k]) => k);
    log(`one overlay file changed ${Math.round(changed.ms)} ms; rerun: ${reran.join(', ')}; hit: ${Object.entries(changed.value.cache).filter(([, s]) => s === 'hit').map(([k]) => k).join(', ')}`);
    row(`default: one overlay file changed (ms) vs cold [reran ${reran.length}]`, changed.ms, cold.ms, 'ms');

    // 3. The fleet: `sites` sites of the default profile, in one process.
    const sdir = join(work, 'sites');
    mkdirSync(sdir);
    const ext = relative(sdir, DEFAULT);
    const files: string[] = [];
    for (let i = 1; i <= sites; i++) {
      const n = String(i).padStart(4, '0');
      const f = join(sdir, `site-${n}.yaml`);
      writeFileSync(
        f,
        `extends: ${ext}\nsite:\n  name: site-${n}\n  hostname: site-${n}.fleet.example\n  network:\n    address: 10.${(i >> 8) & 255}.${i & 255}.10/24\n    gateway: 10.${(i >> 8) & 255}.${i & 255}.1\n    dns: [10.0.0.53]\n  env:\n    STORE_ID: "${n}"\n`,
      );
      files.push(f);
    }
    const fleet = await timed(() => buildMatrix(files, { jobs, outRoot: join(work, 'out-sites'), cacheDir }));
    if (fleet.value.failures.length) throw fleet.value.failures[0]!.error;
    const built = fleet.value.builds.map((b) => b.result);
    const perSite = fleet.ms / sites;
    const compressed = built.flatMap((b) => STEPS_THAT_COMPRESS.filter((s) => b.cache[s] === 'miss' && s !== 'installer image'));
    const rootfs = new Set(built.map((b) => b.record.artifacts['rootfs.squashfs']!.sha256));
    log(`${sites} sites in ${Math.round(fleet.ms)} ms (${jobs} at a time): ${Math.round(perSite)} ms a site; rootfs digests: ${rootfs.size}; initramfs/squashfs made again: ${compressed.length}`);
    if (rootfs.size !== 1 || !rootfs.has(cold.value.record.artifacts['rootfs.squashfs']!.sha256)) throw new Error('the sites do not share the default rootfs');
    row(`${sites} sites: wall time per variant (ms, ${jobs} jobs) vs cold build`, perSite, cold.ms, 'ms');

    // 4. Pushed: the base image, then every site into the same repository.
    const repo = `${registry.host}/fleet/os`;
    const pushOpts = { insecure: true, blobCache: false as const, credentials: null };
    const first = await pushBuild(cold.value.outDir, `${repo}:1.0.0`, pushOpts);
    let sent = 0;
    let siteImage = 0;
    const t0 = performance.now();
    for (const b of built) {
      const r = await pushBuild(b.outDir, `${repo}:1.0.0-${b.record.site!.name}`, pushOpts);
      sent += r.stats.blobBytesSent;
      siteImage = Math.max(siteImage, await imageBytes(b));
    }
    const pushMs = performance.now() - t0;
    const registryBytes = await duBytes(join(registry.dir, 'storage'));
    log(`base image ${first.stats.blobBytesSent} blob bytes pushed; ${sites} sites: ${sent} blob bytes (${Math.round(sent / sites)} a site), ${Math.round(pushMs / sites)} ms a push; registry ${registryBytes} bytes on disk`);
    row(`${sites} sites: new blob bytes pushed per variant (B) vs one image`, sent / sites, siteImage, 'B');
    row(`${sites} sites + base: registry size (MiB) vs ${sites} x one image`, registryBytes / (1 << 20), (sites * siteImage) / (1 << 20), 'MiB');
    const stageBytes = await StageCache.open(cacheDir).size();
    const outBytes = await duBytes(join(work, 'out-sites'));
    log(`local stage cache ${stageBytes} bytes; ${sites} site output directories take ${outBytes} bytes on disk`);
    row(`local stage cache after ${sites + 2} builds (MiB) vs ${sites} x one image`, stageBytes / (1 << 20), (sites * siteImage) / (1 << 20), 'MiB');
    rmSync(join(work, 'out-sites'), { recursive: true, force: true });

    // 5. A second machine: an empty cache directory, the registry cache only.
    const cacheRepo = `${registry.host}/fleet/cache`;
    const site1 = await loadProfile(files[0]!);
    const to = await RemoteStageCache.open(cacheRepo, pushOpts);
    const pushed = await timed(() => build(site1, { ...opts1('out-push'), remoteCache: { to } }));
    await to.close();
    log(`--cache-to ${Math.round(pushed.ms)} ms (all local hits, records pushed)`);
    const other = join(work, 'machine-2');
    mkdirSync(other);
    const from = await RemoteStageCache.open(cacheRepo, pushOpts);
    const remote = await timed(async () => build(await loadProfile(files[0]!), { outRoot: join(other, 'out'), cacheDir: join(other, 'cache'), progress: 'silent', remoteCache: { from } }));
    await from.close();
    const notRemote = statuses(remote.value, 'remote');
    log(`second machine ${Math.round(remote.ms)} ms: ${JSON.stringify(remote.value.cache)}; received ${from.client.stats.bytesReceived} bytes`);
    if (notRemote.length) throw new Error(`the second machine made stages itself: ${notRemote.join(', ')}`);
    if (remote.value.installer.manifestDigest !== pushed.value.installer.manifestDigest) throw new Error('the second machine built another image');
    row('second machine from the registry cache (ms) vs cold [0 stages made]', remote.ms, cold.ms, 'ms');
    return rows;
  } finally {
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
