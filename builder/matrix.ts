import { readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { parse } from 'yaml';
import { openLock } from './lock/lock.ts';
import { loadProfile, type LoadedProfile } from './profile/load.ts';
import type { Profile } from './profile/schema.ts';
import { build, outputDirFor, type BuildOptions, type BuildResult } from './pipeline.ts';
import { InputError, OssifyError } from './util/errors.ts';

/**
 * Many profiles in one process (`ossify build a.yaml b.yaml …`, `--matrix`): every build
 * shares the stage cache, so the stages a fleet's sites have in common run once (the others
 * wait on the stage's lock and then hit), and at most `jobs` builds run at a time.
 */

/**
 * The profiles of `--matrix PATH`: a directory's *.yaml files (sorted, not recursive), or a file
 * listing profiles (a YAML list, or one path a line; relative to the file).
 */
export async function matrixProfiles(path: string): Promise<string[]> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new InputError(`--matrix ${path}: no such file or directory`);
  if (st.isDirectory()) {
    const names = (await readdir(path)).filter((n) => /\.ya?ml$/.test(n) && !n.endsWith('.lock.yaml')).sort();
    if (names.length === 0) throw new InputError(`--matrix ${path}: the directory holds no .yaml profiles`);
    return names.map((n) => join(path, n));
  }
  const text = await readFile(path, 'utf8');
  let list: unknown;
  try {
    list = parse(text);
  } catch {
    list = undefined;
  }
  const entries = Array.isArray(list) ? list : text.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter(Boolean);
  if (!entries.every((e): e is string => typeof e === 'string' && e !== '')) throw new InputError(`--matrix ${path}: expected a list of profile paths`);
  if (entries.length === 0) throw new InputError(`--matrix ${path} lists no profiles`);
  return entries.map((e) => resolve(dirname(path), e));
}

/** Runs `fn` over `items` with at most `jobs` at once; never rejects, every outcome is returned in order. */
export async function bounded<T, R>(items: readonly T[], jobs: number, fn: (item: T, index: number) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]!, i) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, items.length)) }, worker));
  return out;
}

export interface MatrixBuild {
  file: string;
  loaded: LoadedProfile;
  result: BuildResult;
  ms: number;
}

export interface MatrixOptions extends Omit<BuildOptions, 'lock' | 'progress'> {
  jobs: number;
  frozen?: boolean;
  /** Called as each build ends (in completion order). */
  onDone?: (outcome: { file: string; build?: MatrixBuild; error?: unknown }) => void | Promise<void>;
}

/**
 * Loads every profile first (a bad one fails the whole run before anything is built, as a
 * single build would), refuses two profiles with the same output directory, then builds.
 */
export async function buildMatrix(files: readonly string[], opts: MatrixOptions): Promise<{ builds: MatrixBuild[]; failures: { file: string; error: unknown }[] }> {
  const loaded = await Promise.all(files.map((f) => loadProfile(f)));
  const seen = new Map<string, string>();
  for (const [i, l] of loaded.entries()) {
    const dir = outputDirFor(resolve(opts.outRoot), l);
    const other = seen.get(dir);
    if (other) {
      throw new InputError(`${files[i]} and ${other} both build ${relative(process.cwd(), dir) || dir}`, { hint: 'give each site its own site.name (or each profile its own name or version)' });
    }
    seen.set(dir, files[i]!);
  }
  const outcomes = await bounded(loaded, opts.jobs, async (l, i) => {
    const t0 = performance.now();
    try {
      const lock = await openLock(l, opts.frozen === true);
      const { jobs: _j, frozen: _f, onDone: _o, ...rest } = opts;
      const result = await build(l, { ...rest, progress: 'silent', ...(lock ? { lock } : {}) });
      const done: MatrixBuild = { file: files[i]!, loaded: l, result, ms: Math.round(performance.now() - t0) };
      await opts.onDone?.({ file: files[i]!, build: done });
      return done;
    } catch (error) {
      await opts.onDone?.({ file: files[i]!, error });
      throw error;
    }
  });
  const builds: MatrixBuild[] = [];
  const failures: { file: string; error: unknown }[] = [];
  outcomes.forEach((o, i) => (o.status === 'fulfilled' ? builds.push(o.value) : failures.push({ file: files[i]!, error: o.reason })));
  return { builds, failures };
}

/** The exit code a run with these failures ends with: the highest of theirs (2 for bad input, else 1). */
/** The tag a matrix build's image is pushed under: its version, a site's with the site's name. */
export function matrixPushTag(p: Pick<Profile, 'version' | 'site'>): string {
  return `${p.version}${p.site ? `-${p.site.name}` : ''}`;
}

export function failureExitCode(failures: readonly { error: unknown }[]): 0 | 1 | 2 {
  if (failures.length === 0) return 0;
  return failures.some((f) => !(f.error instanceof OssifyError) || f.error.exitCode === 1) ? 1 : 2;
}
