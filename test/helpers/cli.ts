import { execa } from 'execa';
import { fileURLToPath } from 'node:url';

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
