import { mkdtemp, open, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { textContent } from './tree/content.ts';
import { type FileTree, compareBytes } from './tree/tree.ts';
import { OssifyError } from './util/errors.ts';
import { BUILD_JSON, DISK, INITRAMFS, KERNEL, ROOTFS } from './release/artifacts.ts';
import { SBOM_FILE } from './trust/sbom.ts';
import { PROVENANCE_FILE } from './trust/provenance.ts';

/**
 * `ossify build --verify-reproducible`: the build is done a second time by a child process
 * of the real CLI, in a fresh directory with another time zone, umask and locale, and the
 * two outputs must be byte-identical, every file of them (the OCI layout, so the installer
 * manifest digest, included). Only build.json's `timings` may differ.
 */

/**
 * Test hook, never for real builds: with OSSIFY_TEST_NONDETERMINISM=1 the pipeline writes the
 * wall clock into the rootfs (/etc/ossify-test-nondeterminism), so tests can prove the
 * reproducibility check catches a non-deterministic build.
 */
export const NONDETERMINISM_ENV = 'OSSIFY_TEST_NONDETERMINISM';

export function applyTestNondeterminism(tree: FileTree, env: NodeJS.ProcessEnv = process.env): void {
  if (env[NONDETERMINISM_ENV] !== '1') return;
  tree.set('etc/ossify-test-nondeterminism', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, content: textContent(`${new Date().toISOString()} ${process.hrtime.bigint()}\n`) });
}

export interface Difference {
  /** Path relative to the output directory. */
  path: string;
  /** First differing byte, or undefined when the file exists on one side only. */
  offset?: number;
  detail: string;
}

/** The artifacts first, in the order the pipeline makes them, so the first difference points at the earliest stage. */
const ORDER = [INITRAMFS, SBOM_FILE, ROOTFS, KERNEL, DISK, PROVENANCE_FILE, BUILD_JSON];

function rank(path: string): number {
  const i = ORDER.indexOf(path);
  return i < 0 ? ORDER.length : i;
}

async function listFiles(root: string, dir = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, dir), { withFileTypes: true })) {
    const rel = dir ? `${dir}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(root, rel)));
    else out.push(rel);
  }
  return out;
}

/** build.json without the step timings, which measure the machine, not the build. */
async function normalisedBuildJson(path: string): Promise<Buffer> {
  const j = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  delete j.timings;
  return Buffer.from(`${JSON.stringify(j, null, 2)}\n`);
}

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** Offset of the first differing byte of two files, or -1 when identical; streamed, for multi-GiB disks. */
export async function compareFiles(a: string, b: string): Promise<number> {
  const [sa, sb] = await Promise.all([stat(a), stat(b)]);
  const fa = await open(a, 'r');
  const fb = await open(b, 'r');
  try {
    const size = 4 << 20;
    const ba = Buffer.alloc(size);
    const bb = Buffer.alloc(size);
    for (let pos = 0; ; pos += size) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, size, pos), fb.read(bb, 0, size, pos)]);
      if (ra.bytesRead !== rb.bytesRead || !ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) {
        return pos + firstDiff(ba.subarray(0, ra.bytesRead), bb.subarray(0, rb.bytesRead));
      }
      if (ra.bytesRead === 0) return sa.size === sb.size ? -1 : pos;
    }
  } finally {
    await fa.close();
    await fb.close();
  }
}

/** Every difference between two build output directories, the earliest artifact first. */
export async function compareOutputs(first: string, second: string): Promise<Difference[]> {
  const [fa, fb] = await Promise.all([listFiles(first), listFiles(second)]);
  const inB = new Set(fb);
  const all = [...new Set([...fa, ...fb])].sort((x, y) => rank(x) - rank(y) || compareBytes(x, y));
  const diffs: Difference[] = [];
  for (const p of all) {
    if (!inB.has(p)) {
      diffs.push({ path: p, detail: 'only in the first build' });
      continue;
    }
    if (!fa.includes(p)) {
      diffs.push({ path: p, detail: 'only in the second build' });
      continue;
    }
    if (p === BUILD_JSON) {
      const [x, y] = await Promise.all([normalisedBuildJson(join(first, p)), normalisedBuildJson(join(second, p))]);
      if (!x.equals(y)) {
        const offset = firstDiff(x, y);
        diffs.push({ path: p, offset, detail: `differs at byte ${offset} of the record without timings` });
      }
      continue;
    }
    const offset = await compareFiles(join(first, p), join(second, p));
    if (offset < 0) continue;
    const inRootfs = p === SBOM_FILE ? await sbomFileDifference(join(first, p), join(second, p)) : undefined;
    diffs.push({ path: p, offset, detail: `differs at byte ${offset} (0x${offset.toString(16)})${inRootfs ? `: ${inRootfs}` : ''}` });
  }
  return diffs;
}

/** The SBOM lists every rootfs file's sha256, so it can name the file whose bytes changed. */
async function sbomFileDifference(a: string, b: string): Promise<string | undefined> {
  try {
    const files = async (p: string) => {
      const doc = JSON.parse(await readFile(p, 'utf8')) as { files?: { fileName: string; checksums: { algorithm: string; checksumValue: string }[] }[] };
      return new Map((doc.files ?? []).map((f) => [f.fileName, f.checksums.map((c) => c.checksumValue).join(',')]));
    };
    const [fa, fb] = await Promise.all([files(a), files(b)]);
    for (const name of [...new Set([...fa.keys(), ...fb.keys()])].sort(compareBytes)) {
      if (fa.get(name) !== fb.get(name)) return `rootfs file ${name} ${!fb.has(name) ? 'is only in the first build' : !fa.has(name) ? 'is only in the second build' : 'has different contents'}`;
    }
  } catch {
    // not an SBOM we can read: the byte offset has to do
  }
  return undefined;
}

async function installerDigest(outDir: string): Promise<string | undefined> {
  try {
    const idx = JSON.parse(await readFile(join(outDir, 'oci', 'index.json'), 'utf8')) as { manifests?: { digest?: string }[] };
    return idx.manifests?.[0]?.digest;
  } catch {
    return undefined;
  }
}

/** A setting the first build did not have, so the second one really runs elsewhere. */
function other(current: string | undefined, choices: readonly [string, string]): string {
  return current === choices[0] ? choices[1] : choices[0];
}

export interface RebuildEnvironment {
  TZ: string;
  LC_ALL: string;
  LANG: string;
  umask: string;
}

export function secondBuildEnvironment(env: NodeJS.ProcessEnv = process.env): RebuildEnvironment {
  const umask = (process.umask() & 0o777).toString(8).padStart(3, '0');
  const locale = other(env.LC_ALL ?? env.LANG, ['C', 'C.UTF-8'] as const);
  return { TZ: other(env.TZ, ['Pacific/Kiritimati', 'America/Adak'] as const), LC_ALL: locale, LANG: locale, umask: other(umask, ['077', '022'] as const) };
}

export interface VerifyReproducibleOptions {
  profileFile: string;
  /** The first build's output directory. */
  outDir: string;
  cacheDir: string;
  /** Extra `ossify build` arguments the first build had (e.g. --frozen). */
  buildArgs?: string[];
  /** Where the child's progress goes; default: discarded. */
  stderr?: 'inherit' | 'pipe';
}

export interface ReproducibleReport {
  secondOutDir: string;
  environment: RebuildEnvironment;
  installerDigest: string | undefined;
  differences: Difference[];
}

/**
 * Builds the profile again as `node <this CLI> build …` in a fresh temporary directory and
 * compares. On success the second output is removed; on failure it is kept for diffing and
 * an OssifyError names the first difference.
 */
export async function verifyReproducible(o: VerifyReproducibleOptions): Promise<ReproducibleReport> {
  const root = await mkdtemp(join(tmpdir(), 'ossify-rebuild-'));
  const out = join(root, 'out');
  const environment = secondBuildEnvironment();
  const cli = process.argv[1];
  if (!cli) throw new OssifyError('cannot tell which ossify CLI is running, so cannot run it again');
  const args = [...process.execArgv, resolve(cli), 'build', resolve(o.profileFile), '--out', out, '--cache-dir', resolve(o.cacheDir), '--json', ...(o.buildArgs ?? [])];
  // A umask can only be set inside the child: sh sets it and execs node (argv only, nothing interpolated).
  const { execa } = await import('execa'); // loaded on demand: a plain build never needs it
  const child = await execa('sh', ['-c', 'umask "$1"; shift; exec "$@"', 'sh', environment.umask, process.execPath, ...args], {
    cwd: root,
    env: { TZ: environment.TZ, LC_ALL: environment.LC_ALL, LANG: environment.LANG },
    reject: false,
    stdin: 'ignore',
    stderr: o.stderr ?? 'pipe',
  });
  if (child.exitCode !== 0) {
    throw new OssifyError(`the second build (for --verify-reproducible) failed with exit code ${child.exitCode}`, {
      hint: typeof child.stderr === 'string' && child.stderr ? child.stderr.trim().split('\n').slice(-10).join('\n') : `see the output above; it ran in ${root}`,
    });
  }
  const secondOutDir = (JSON.parse(child.stdout) as { outDir: string }).outDir;
  const differences = await compareOutputs(o.outDir, secondOutDir);
  const [da, db] = await Promise.all([installerDigest(o.outDir), installerDigest(secondOutDir)]);
  if (da !== db) differences.push({ path: 'oci/index.json', detail: `installer manifest digest ${da} vs ${db}` });
  const report: ReproducibleReport = { secondOutDir, environment, installerDigest: da, differences };
  if (differences.length > 0) {
    const first = differences[0]!;
    throw new OssifyError(`not reproducible: ${first.path} ${first.detail}`, {
      hint: [
        `first build: ${join(o.outDir, first.path)}`,
        `second build (TZ=${environment.TZ}, umask ${environment.umask}, LC_ALL=${environment.LC_ALL}): ${join(secondOutDir, first.path)} (kept for diffing)`,
        `${differences.length} differing file${differences.length === 1 ? '' : 's'}: ${differences.map((d) => d.path).join(', ')}`,
      ].join('\n'),
    });
  }
  await rm(root, { recursive: true, force: true });
  return report;
}
