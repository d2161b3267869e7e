import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { hasNodeZstd, requireNodeWithZstd } from '../test/helpers/node-runtime.ts';
import type { BenchRow } from './types.ts';

/**
 * squashfs writer against mksquashfs: the same tree, compressor, level, block size and core
 * count, timed in the same run. Each ossify run is a child process (bench/squashfs-one.ts,
 * timed from inside: scan + write, worker start-up included, Node start-up not); mksquashfs
 * is timed as a process. Each side runs REPS times, interleaved, and the median counts: this
 * machine is shared and noisy.
 *
 * Two Node.js runtimes are compared when the running one lacks zstd in node:zlib (Node 20):
 * this one (zstd in WebAssembly) and a Node with native zstd (the test oracle runtime, same
 * bytes). gzip runs with both engines: portable (canonical zlib bytes, pure JS) and node.
 */
const CACHE = resolve('out/bench');
const REPS = Number(process.env.OSSIFY_BENCH_REPS ?? 3);

interface Runtime {
  label: string;
  node: string;
}

interface Config {
  comp: 'zstd' | 'gzip';
  level: number;
  gzipEngine: 'portable' | 'node';
  /** Pure JS/WebAssembly bytes do not depend on the runtime: measured once. */
  perRuntime: boolean;
}

function runtimes(): Runtime[] {
  const label = (node: string) => `node ${spawnSync(node, ['-p', 'process.versions.node'], { encoding: 'utf8' }).stdout.trim()}`;
  const list = [{ label: label(process.execPath), node: process.execPath }];
  if (!hasNodeZstd()) {
    try {
      const node = requireNodeWithZstd();
      list.push({ label: label(node), node });
    } catch (err) {
      process.stderr.write(`squashfs bench: no Node.js with native zstd, measuring ${process.version} only: ${(err as Error).message}\n`);
    }
  }
  return list;
}

export async function benchSquashfs(): Promise<BenchRow[]> {
  need('mksquashfs', 'squashfs-tools');
  const trees = [
    { name: 'kernel-modules', dir: await kernelModulesTree() },
    { name: 'small-files', dir: await smallFilesTree() },
  ];
  const cores = availableParallelism();
  const configs: Config[] = [
    { comp: 'zstd', level: 15, gzipEngine: 'portable', perRuntime: true },
    { comp: 'gzip', level: 9, gzipEngine: 'portable', perRuntime: false },
    { comp: 'gzip', level: 9, gzipEngine: 'node', perRuntime: true },
  ];
  const nodes = runtimes();
  const rows: BenchRow[] = [];
  const work = join(CACHE, 'squashfs-run');
  await mkdir(work, { recursive: true });
  for (const t of trees) {
    for (const c of configs) {
      for (const rt of c.perRuntime ? nodes : nodes.slice(0, 1)) {
        const oursT: number[] = [];
        const theirsT: number[] = [];
        const oursCpu: number[] = [];
        const theirsCpu: number[] = [];
        let oursSize = 0;
        let theirsSize = 0;
        let engine = '';
        for (let i = 0; i < REPS; i++) {
          const ourImg = join(work, 'ours.sqfs');
          const one = spawnSync(rt.node, ['--import', 'tsx', 'bench/squashfs-one.ts', t.dir, ourImg, c.comp, String(c.level), String(cores), c.gzipEngine], { encoding: 'utf8', maxBuffer: 1 << 24 });
          if (one.status !== 0) throw new Error(`ossify squashfs under ${rt.label} failed: ${one.stderr}`);
          const r = JSON.parse(one.stdout) as { seconds: number; cpu: number; bytes: number; engine: string };
          oursT.push(r.seconds);
          oursCpu.push(r.cpu);
          oursSize = r.bytes;
          engine = r.engine;

          const theirImg = join(work, 'theirs.sqfs');
          await rm(theirImg, { force: true });
          const level = ['-Xcompression-level', String(c.level)];
          const t1 = performance.now();
          // The shell's `times` reports the children's CPU time, so noise from other processes
          // on a shared machine can be told apart from real work.
          const script = 'mksquashfs "$@" >/dev/null 2>&1; s=$?; times; exit $s';
          const p = spawnSync('sh', ['-c', script, 'sh', t.dir, theirImg, '-comp', c.comp, ...level, '-b', '131072', '-processors', String(cores), '-noappend', '-quiet', '-no-progress'], { encoding: 'utf8' });
          theirsT.push((performance.now() - t1) / 1000);
          if (p.status !== 0) throw new Error(`mksquashfs failed (exit ${p.status})`);
          theirsCpu.push(childCpu(p.stdout));
          theirsSize = (await stat(theirImg)).size;
        }
        const ours = median(oursT);
        const theirs = median(theirsT);
        const label = `${t.name} ${c.comp}-${c.level} 128K ${cores}c, ${rt.label}, ${engine}`;
        rows.push({ name: `squashfs time ${label}`, ours, theirs, ratio: ours / theirs, unit: 's' });
        const oc = median(oursCpu);
        const tc = median(theirsCpu);
        rows.push({ name: `squashfs cpu ${label}`, ours: oc, theirs: tc, ratio: oc / tc, unit: 's' });
        rows.push({ name: `squashfs size ${label}`, ours: oursSize / 2 ** 20, theirs: theirsSize / 2 ** 20, ratio: oursSize / theirsSize, unit: 'MiB' });
      }
    }
  }
  await rm(work, { recursive: true, force: true });
  return rows;
}

/** Children's user+system seconds from POSIX `times` output ("0m1.5s 0m0.2s" on line 2). */
function childCpu(out: string): number {
  const line = out.trim().split('\n').pop() ?? '';
  const secs = [...line.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  if (secs.length < 2) throw new Error(`cannot read CPU times from ${JSON.stringify(out)}`);
  return secs[0]! + secs[1]!;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function need(cmd: string, pkg: string): void {
  if (spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status !== 0) {
    throw new Error(`${cmd} is not installed: apt-get install ${pkg}`);
  }
}

function run(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error}`);
  return r.stdout;
}

/** /lib/modules of Debian's cloud kernel: ~1100 real binaries, ~100 MiB. Cached. */
async function kernelModulesTree(): Promise<string> {
  const root = join(CACHE, 'kernel-cloud');
  const done = join(root, '.complete');
  if (!existsSync(done)) {
    need('apt-get', 'apt');
    need('dpkg-deb', 'dpkg');
    const debs = join(root, 'debs');
    await rm(root, { recursive: true, force: true });
    await mkdir(debs, { recursive: true });
    run('apt-get', ['download', 'linux-image-cloud-amd64'], debs);
    const meta = (await readdir(debs)).find((f) => f.startsWith('linux-image-cloud-amd64_'));
    if (!meta) throw new Error('apt-get download linux-image-cloud-amd64 produced no package');
    const dep = /linux-image-[0-9][^\s,(]*-cloud-amd64/.exec(run('dpkg-deb', ['-f', join(debs, meta), 'Depends']))?.[0];
    if (!dep) throw new Error('linux-image-cloud-amd64 does not depend on a versioned kernel package');
    run('apt-get', ['download', dep], debs);
    const real = (await readdir(debs)).find((f) => f.startsWith(`${dep}_`))!;
    run('dpkg-deb', ['-x', join(debs, real), join(root, 'x')]);
    await writeFile(done, `${dep}\n`);
  }
  return join(root, 'x', 'lib', 'modules');
}

/** 30,000 small text-like files in 1,500 directories, with duplicates and symlinks. Deterministic. */
async function smallFilesTree(): Promise<string> {
  const root = join(CACHE, 'small-files-v1');
  const done = join(root, '.complete');
  const dir = join(root, 'tree');
  if (existsSync(done)) return dir;
  await rm(root, { recursive: true, force: true });
  let x = 0x9e3779b9;
  const rnd = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
  const words = 'the of and to in is was for on that with as by at from this be are or an it not which have were but all can has more one also its their been other new these first may into two some time such only after used over most about years between'.split(' ');
  const text = (n: number) => {
    const parts: string[] = [];
    let len = 0;
    while (len < n) {
      const w = words[Math.floor(rnd() * words.length)]!;
      parts.push(w);
      len += w.length + 1;
    }
    return parts.join(rnd() < 0.1 ? '\n' : ' ').slice(0, n);
  };
  const shared = Array.from({ length: 50 }, () => text(200 + Math.floor(rnd() * 3000)));
  for (let d = 0; d < 1500; d++) {
    const sub = join(dir, `pkg${String(d % 100).padStart(2, '0')}`, `d${d}`);
    await mkdir(sub, { recursive: true });
    for (let f = 0; f < 20; f++) {
      const r = rnd();
      const body = r < 0.1 ? shared[Math.floor(rnd() * shared.length)]! : text(Math.floor(rnd() ** 2 * 16384));
      await writeFile(join(sub, `file-${f}.txt`), body);
    }
    if (d % 10 === 0) await symlink(`../d${Math.max(0, d - 1)}/file-0.txt`, join(sub, 'link'));
  }
  await writeFile(done, '');
  return dir;
}
