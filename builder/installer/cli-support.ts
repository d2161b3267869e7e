import type { Command } from 'commander';
import { parseSize } from '../profile/schema.ts';
import { InputError } from '../util/errors.ts';
import { readFile } from 'node:fs/promises';
import { openReleaseSource, type ReleaseSource } from './release.ts';
import { verifyImageSignature } from '../trust/signatures.ts';
import { addRegistryOptions, registryOptions, type RegistryFlags } from '../commands/registry-flags.ts';

/** Flags the install and upgrade commands share for naming a release. */
export interface SourceCliFlags extends RegistryFlags {
  image?: string;
  from?: string;
  allowTag?: boolean;
  arch?: string;
  requireSignature?: string;
}

export function addSourceOptions(cmd: Command): Command {
  return addRegistryOptions(
    cmd
      .option('--image <ref>', 'installer image by digest, REGISTRY/REPOSITORY@sha256:DIGEST (as ossify push prints it)')
      .option('--from <dir>', 'a release directory instead: a build output (out/<name>-<version>/) or one written by ossify pull')
      .option('--allow-tag', 'accept an image reference without a digest (resolved once, then pinned)'),
  ).option('--require-signature <cosign.pub>', 'refuse the image unless it carries a valid cosign signature by this public key');
}

export async function sourceFromFlags(f: SourceCliFlags): Promise<ReleaseSource> {
  if (f.requireSignature !== undefined) {
    // Checked before a single payload byte is fetched; the signature covers the manifest
    // digest, and the pull then verifies every byte against that same digest.
    if (f.image === undefined) {
      throw new InputError('--require-signature needs --image REPO@sha256:…: a directory carries no signature');
    }
    const pem = await readFile(f.requireSignature, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new InputError(`cannot read the public key ${f.requireSignature}: ${err.code ?? err.message}`);
    });
    await verifyImageSignature(registryOptions(f), f.image, pem);
  }
  return openReleaseSource({
    ...(f.image !== undefined ? { image: f.image } : {}),
    ...(f.from !== undefined ? { from: f.from } : {}),
    ...(f.allowTag ? { allowTag: true } : {}),
    ...registryOptions(f),
    ...(f.arch !== undefined ? { arch: f.arch } : {}),
  });
}

export function sizeFlag(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  let n: number;
  try {
    n = parseSize(value);
  } catch {
    throw new InputError(`${flag} ${JSON.stringify(value)} is not a size (e.g. 2G, 512MiB)`);
  }
  if (!Number.isSafeInteger(n) || n <= 0) throw new InputError(`${flag} must be a positive size, not ${value}`);
  return n;
}

export function intFlag(value: string | undefined, flag: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) throw new InputError(`${flag} must be a whole number from ${min} to ${max}, not ${value}`);
  return n;
}

/** Step progress on stderr, so stdout stays the result (or JSON). */
export function stderrLog(line: string): void {
  process.stderr.write(`ossify: ${line}\n`);
}
