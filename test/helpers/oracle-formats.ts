import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireTool } from './oracle.ts';

/**
 * Oracle plumbing for the format tests. A missing oracle fails the test with the package
 * to install (the shared `requireTool`): a skipped oracle test silently proves nothing.
 */
export function needTool(cmd: string, pkg: string): void {
  addSbinToPath();
  requireTool(cmd, pkg);
}

/** sgdisk, sfdisk and fsck.fat live in /usr/sbin, which a non-root PATH may lack. */
function addSbinToPath(): void {
  const parts = (process.env.PATH ?? '').split(':').filter(Boolean);
  for (const d of ['/usr/sbin', '/sbin']) if (!parts.includes(d)) parts.push(d);
  process.env.PATH = parts.join(':');
}

function withSbin(): NodeJS.ProcessEnv {
  addSbinToPath();
  return { ...process.env, LC_ALL: 'C', TZ: 'UTC', MTOOLS_SKIP_CHECK: '1' };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool without a shell; never throws on a non-zero exit (the test judges it). */
export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; input?: Uint8Array; env?: Record<string, string> } = {},
): RunResult {
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    input: opts.input,
    env: { ...withSbin(), ...opts.env },
    maxBuffer: 256 << 20,
    encoding: 'buffer',
  });
  if (r.error) throw r.error;
  return { code: r.status ?? -1, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

export function tempDir(prefix: string): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), `ossify-${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** The temporary directories of a test file, removed together: `afterAll(dirs.cleanup)`. */
export function tempDirs(): { make: (prefix: string) => string; cleanup: () => void } {
  const made: (() => void)[] = [];
  return {
    make(prefix) {
      const d = tempDir(prefix);
      made.push(d.cleanup);
      return d.path;
    },
    cleanup: () => {
      for (const c of made.splice(0)) c();
    },
  };
}
