import { produceAtomic } from '../../util/atomic.ts';
import { runTool } from './tool.ts';

/**
 * sbsign (Debian's sbsigntool) as an explicit signing backend, for keys that live in an
 * engine/HSM or when the reference tool's output is wanted. Its signatures carry a
 * signingTime attribute, so they differ run to run; `signPeImage` (authenticode.ts) is the
 * deterministic alternative.
 */

export interface SbsignOptions {
  /** PEM private key path. */
  key: string;
  /** PEM certificate path. */
  cert: string;
  /** Where to write the signed image; defaults to replacing `path` (atomically). */
  output?: string;
}

/** Signs the PE at `path`; returns the path of the signed image. */
export async function signPe(path: string, opts: SbsignOptions): Promise<string> {
  const output = opts.output ?? path;
  await produceAtomic(output, async (tmp) => {
    await runTool('sbsign', 'sbsigntool', ['--key', opts.key, '--cert', opts.cert, '--output', tmp, path], `to sign ${path}`);
  });
  return output;
}

/** `sbverify --cert`: true when the image's signature chains to `cert` and its hash matches. */
export async function verifyPe(path: string, cert: string): Promise<boolean> {
  try {
    await runTool('sbverify', 'sbsigntool', ['--cert', cert, path], `to verify ${path}`);
    return true;
  } catch (err) {
    if ((err as { name?: string }).name === 'MissingToolError') throw err;
    return false;
  }
}
