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

/** An initramfs image's cpio archive, decompressed by the host tool its magic names (gzip, zstd) or as is. */
export function initramfsCpio(img: Uint8Array): Buffer {
  const magic = Buffer.from(img.subarray(0, 4)).toString('hex');
  const tool = magic.startsWith('1f8b') ? ['gzip', 'gzip'] : magic === '28b52ffd' ? ['zstd', 'zstd'] : undefined;
  if (!tool) return Buffer.from(img);
  requireTool(tool[0]!, tool[1]!);
  const r = spawnSync(tool[0]!, ['-dc'], { input: img, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`${tool[0]} -dc exited ${r.status}: ${String(r.stderr)}`);
  return r.stdout;
}
