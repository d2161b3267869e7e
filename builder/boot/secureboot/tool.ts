import { MissingToolError, OssifyError } from '../../util/errors.ts';

/**
 * Runs a host signing tool with an argv array (never a shell: key paths and subjects may hold
 * any character). A missing tool says which Debian package provides it.
 */
export async function runTool(tool: string, debianPackage: string, args: string[], why: string): Promise<{ stdout: string; stderr: string }> {
  try {
    const { execa } = await import('execa'); // loaded when a tool runs: most builds run none
    const r = await execa(tool, args, { env: { LC_ALL: 'C' }, stdin: 'ignore' });
    return { stdout: String(r.stdout), stderr: String(r.stderr) };
  } catch (err) {
    const e = err as { code?: string; stderr?: string; exitCode?: number };
    if (e.code === 'ENOENT') throw new MissingToolError(tool, debianPackage, why);
    const detail = String(e.stderr ?? '').trim().split('\n').slice(-5).join('\n');
    throw new OssifyError(`${tool} failed (exit ${e.exitCode ?? '?'}) ${why}${detail ? `:\n${detail}` : ''}`, { cause: err });
  }
}
