import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scanSparse } from '../builder/cache/sparse.ts';
import { OUTPUTS, type OutputName } from '../builder/outputs/index.ts';
import type { OutputContext } from '../builder/outputs/types.ts';
import { writeOutputs } from '../builder/outputs/write.ts';
import type { BuildRecord } from '../builder/release/build-json.ts';
import type { BenchRow } from './types.ts';

/**
 * Writing each image format from one built disk.raw (the default profile's), against the host
 * tool that writes it, in the same run: `qemu-img convert` for qcow2 (plain and `-c`), fixed
 * VHD (`-O vpc -o subformat=fixed,force_size`) and stream-optimized VMDK; GNU tar
 * (`--format=oldgnu -Sczf`, as Google documents) for the GCE tar.gz; qemu-img's VMDK plus
 * `tar -cf` of it with the descriptor and manifest for the OVA. ossify's side is what a build
 * runs (writeOutputs, in this process): the writer, given the extents the build records (so,
 * like qemu-img with SEEK_DATA, it never reads the disk's holes), the fsync and rename, and
 * the sha256 build.json lists, which qemu-img does not compute (for the fixed VHD that is
 * hashing all 674 MiB, holes included, and most of its time).
 * Each side runs REPS times, interleaved; the median counts. Sizes are compared too.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REPS = Number(process.env.OSSIFY_BENCH_REPS ?? 3);
const log = (line: string) => process.stderr.write(`[formats] ${line}\n`);

interface Case {
  name: string;
  format: OutputName;
  options?: Record<string, unknown>;
  /** The host tool's command lines, writing `out` from `raw` (in `dir`). */
  peer: (raw: string, out: string, dir: string) => string[][];
  /** The peer's output file name in `dir`. */
  peerFile: string;
}

const CASES: Case[] = [
  { name: 'qcow2', format: 'qcow2', peerFile: 'peer.qcow2', peer: (raw, out) => [['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, out]] },
  { name: 'qcow2 zlib', format: 'qcow2', options: { compression: 'zlib' }, peerFile: 'peer.qcow2', peer: (raw, out) => [['qemu-img', 'convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, out]] },
  { name: 'vhd fixed', format: 'vhd', peerFile: 'peer.vhd', peer: (raw, out) => [['qemu-img', 'convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size', raw, out]] },
  { name: 'vmdk streamOptimized', format: 'vmdk', peerFile: 'peer.vmdk', peer: (raw, out) => [['qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, out]] },
  {
    name: 'ova',
    format: 'ova',
    peerFile: 'peer.ova',
    peer: (raw, out, dir) => [
      ['qemu-img', 'convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, join(dir, 'disk.vmdk')],
      ['sh', '-c', 'cd "$1" && sha256sum disk.vmdk x.ovf > x.mf && tar -cf "$2" x.ovf x.mf disk.vmdk', 'sh', dir, out],
    ],
  },
  { name: 'gce tar.gz', format: 'gce', peerFile: 'peer.tar.gz', peer: (raw, out) => [['tar', '--format=oldgnu', '-Sczf', out, '-C', join(raw, '..'), 'disk.raw']] },
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function check(cmd: string, pkg: string): void {
  if (spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd]).status !== 0) throw new Error(`${cmd} is not installed: apt-get install ${pkg}`);
}

function runPeer(cmds: string[][]): number {
  const t0 = performance.now();
  for (const [cmd, ...args] of cmds) {
    const r = spawnSync(cmd!, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${String(r.stderr)}`);
  }
  return (performance.now() - t0) / 1000;
}

export async function benchFormats(): Promise<BenchRow[]> {
  check('qemu-img', 'qemu-utils');
  check('tar', 'tar');
  const work = mkdtempSync(join(tmpdir(), 'ossify-bench-formats-'));
  const rows: BenchRow[] = [];
  try {
    // Untimed: one build of the default profile (inputs from out/cache), and the extents of its disk.
    const b = spawnSync('node', [join(ROOT, 'bin', 'ossify.js'), 'build', join(ROOT, 'profiles', 'default.yaml'), '--out', join(work, 'out'), '--cache-dir', join(ROOT, 'out', 'cache'), '--json'], {
      encoding: 'utf8',
      maxBuffer: 1 << 28,
      env: { ...process.env, CI: '1' },
    });
    if (b.status !== 0) throw new Error(`ossify build failed: ${b.stderr}`);
    const built = JSON.parse(b.stdout) as BuildRecord & { outDir: string };
    const raw = join(built.outDir, 'disk.raw');
    const { image } = await scanSparse(raw);
    const extents = image.chunks.map((c) => ({ offset: c.offset, length: c.length }));
    log(`disk.raw: ${image.size} bytes, ${extents.length} data chunks of 64 KiB`);
    const ctx: Omit<OutputContext, 'made' | 'dir'> = {
      disk: { path: raw, size: image.size, sha256: image.sha256, extents },
      build: { name: built.name, version: built.version, arch: built.arch, epoch: built.epoch, profileDigest: built.profileDigest },
    };
    for (const c of CASES) {
      const ours: number[] = [];
      const theirs: number[] = [];
      let oursSize = 0;
      let theirsSize = 0;
      for (let i = 0; i < REPS; i++) {
        const dir = join(work, 'case');
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir);
        writeFileSync(join(dir, 'x.ovf'), '<Envelope/>\n');
        const t0 = performance.now();
        const [out] = await writeOutputs([{ format: c.format, options: c.options ?? {} }], { ...ctx, dir });
        ours.push((performance.now() - t0) / 1000);
        oursSize = out!.size;
        if (statSync(join(dir, OUTPUTS[c.format].file)).size !== oursSize) throw new Error(`${c.name}: build.json size is not the file's`);
        theirs.push(runPeer(c.peer(raw, join(dir, c.peerFile), dir)));
        theirsSize = statSync(join(dir, c.peerFile)).size;
      }
      log(`${c.name}: ossify ${ours.map((s) => s.toFixed(2)).join(' ')} s, peer ${theirs.map((s) => s.toFixed(2)).join(' ')} s`);
      rows.push({ name: `write ${c.name} from disk.raw (ossify vs ${c.peer(raw, '', '')[0]![0]})`, ours: median(ours), theirs: median(theirs), ratio: median(ours) / median(theirs), unit: 's' });
      rows.push({ name: `${c.name} file size`, ours: oursSize / 2 ** 20, theirs: theirsSize / 2 ** 20, ratio: oursSize / theirsSize, unit: 'MiB' });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return rows;
}
