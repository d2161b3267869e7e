import { spawnSync, type SpawnSyncOptions } from 'node:child_process';

const found = new Map<string, boolean>();

/**
 * Oracle programs are part of the test, not optional extras: a missing one fails the test
 * with the command that installs it (tests never skip silently).
 */
export function requireTool(cmd: string, debianPackage: string): void {
  let ok = found.get(cmd);
  if (ok === undefined) {
    ok = spawnSync('sh', ['-c', `command -v "$1"`, 'sh', cmd], { stdio: 'ignore' }).status === 0;
    found.set(cmd, ok);
  }
  if (!ok) throw new Error(`test oracle ${cmd} is not installed: install ${cmd}: apt-get install ${debianPackage}`);
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion; never throws on a non-zero exit (callers assert on it). */
export function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 30, ...opts });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') };
}

/** Runs a program and throws with its output when it fails. */
export function runOk(cmd: string, args: string[], opts: SpawnSyncOptions = {}): string {
  const r = run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stderr}\n${r.stdout}`.slice(0, 8000));
  return r.stdout;
}
