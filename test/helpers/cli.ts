import { execa } from 'execa';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StatusReport } from '../../builder/installer/status.ts';
import type { BuildRecord } from '../../builder/release/build-json.ts';

export const PROJECT_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const OSSIFY_BIN = fileURLToPath(new URL('../../bin/ossify.js', import.meta.url));

/** Runs the real CLI entry point, as a user would, and never throws on a non-zero exit. */
export function ossify(args: string[], opts: { cwd?: string; env?: Record<string, string>; umask?: string } = {}) {
  // A umask can only be set from inside the child, so a POSIX sh sets it and execs node (argv, no string interpolation).
  const [cmd, argv] = opts.umask
    ? ['sh', ['-c', 'umask "$1"; shift; exec "$@"', 'sh', opts.umask, 'node', OSSIFY_BIN, ...args]]
    : ['node', [OSSIFY_BIN, ...args]];
  return execa(cmd, argv as string[], {
    cwd: opts.cwd ?? PROJECT_ROOT,
    env: { CI: '1', ...opts.env },
    reject: false,
    stdin: 'ignore',
  });
}

/** Runs the CLI and throws with its stderr unless it exits 0 (for set-up steps, not assertions). */
export async function ossifyOk(args: string[], env: Record<string, string> = {}) {
  const r = await ossify(args, { env });
  if (r.exitCode !== 0) throw new Error(`ossify ${args.join(' ')} failed (${r.exitCode}):\n${r.stderr}`);
  return r;
}

/** `ossify build PROFILE --out OUT --cache-dir CACHE --json`; returns the build's output directory. */
export async function buildProfile(profile: string, out: string, cacheDir: string): Promise<string> {
  const r = await ossify(['build', profile, '--out', out, '--cache-dir', cacheDir, '--json']);
  if (r.exitCode !== 0) throw new Error(`ossify build ${profile} failed (${r.exitCode}):\n${r.stderr}`);
  return (JSON.parse(r.stdout) as { outDir: string }).outDir;
}

/** `ossify status --disk DISK --json --verify`, parsed. */
export async function diskStatus(disk: string): Promise<StatusReport> {
  return JSON.parse((await ossifyOk(['status', '--disk', disk, '--json', '--verify'])).stdout) as StatusReport;
}

export const slotOf = (s: StatusReport, slot: 'a' | 'b') => s.slots.find((x) => x.slot === slot)!;

/** A build output directory's build.json. */
export const buildRecord = (dir: string) => JSON.parse(readFileSync(join(dir, 'build.json'), 'utf8')) as BuildRecord;
