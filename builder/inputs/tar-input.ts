import { basename } from 'node:path';
import { sha256File } from '../util/hash.ts';
import { InputError } from '../util/errors.ts';
import type { Input } from '../profile/schema.ts';
import { readArchive } from './archive.ts';
import { decompressFile } from './decompress.ts';
import { z } from 'zod';
import type { InputKind } from './kind.ts';
import { LockSha256 } from './pins.ts';
import type { InputContext, LoadedInput } from './types.ts';

type TarSpec = Extract<Input, { tar: string }>;

export async function tarSha256(path: string): Promise<string> {
  return sha256File(path).catch((err: NodeJS.ErrnoException) => {
    throw new InputError(`tar:${path}: cannot read the archive: ${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)}`, { cause: err });
  });
}

/** A tar archive on the host, plain or compressed (gzip, zstd, xz, bzip2: found by magic bytes). */
export async function loadTarInput(input: TarSpec, ctx: InputContext): Promise<LoadedInput> {
  const path = input.tar;
  const origin = `tar:${path}`;
  const sha256 = await tarSha256(path);
  const pin = ctx.lock?.pin(input);
  if (pin && 'tar' in pin && pin.tar.sha256 !== sha256) ctx.lock!.stale(input, `${path} has sha256 ${sha256}, the lock says ${pin.tar.sha256}`);
  const { chunks } = await decompressFile(path, origin);
  const tree = await readArchive(chunks, origin);
  return { tree, sources: [{ kind: 'tar', name: basename(path), sha256 }], pin: { tar: { sha256 } } };
}

/** `tar:`: an archive of the checkout, pinned by its sha256. */
export const tarKind: InputKind<TarSpec> = {
  origin: (input) => `tar:${input.tar}`,
  load: (input, ctx) => loadTarInput(input, ctx),
  mapPaths: (input, at, fn) => ({ ...input, tar: fn(input.tar, [...at, 'tar']) }),
  lock: {
    key: (input, _arch, relative) => ({ tar: relative(input.tar) }),
    resolve: async (input) => ({ tar: { sha256: await tarSha256(input.tar) } }),
    localFiles: (pin, source, absolute) => ('tar' in pin && 'tar' in source ? [{ file: absolute(source.tar), sha256: pin.tar.sha256 }] : []),
    mapPinPaths: (pin) => pin,
    schema: { source: z.strictObject({ tar: z.string() }), pin: z.strictObject({ sha256: LockSha256 }) },
  },
};
