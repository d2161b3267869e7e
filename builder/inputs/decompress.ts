import { collectBytes } from '../util/bytes.ts';
import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { InputError, MissingToolError, OssifyError } from '../util/errors.ts';
import { isZstd, zstdDecompress } from './zstd.ts';
import { xzDecode } from './xz-decode.ts';

/**
 * Compressed inputs are recognised by their magic bytes, never by file name: a `.tar.gz`
 * that is really zstd still unpacks, and a misnamed file cannot pick the wrong decoder.
 * gzip, zstd and xz are decoded in-process (xz block-parallel on worker threads); bzip2,
 * rare in packages and images, goes through the host tool, streamed.
 */

export type Compression = 'gzip' | 'zstd' | 'xz' | 'bzip2' | 'none';

export function sniffCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (isZstd(head)) return 'zstd';
  if (head.length >= 6 && head[0] === 0xfd && head[1] === 0x37 && head[2] === 0x7a && head[3] === 0x58 && head[4] === 0x5a && head[5] === 0) {
    return 'xz';
  }
  if (head.length >= 3 && head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return 'bzip2';
  return 'none';
}

const HOST_TOOLS = {
  bzip2: { tool: 'bzip2', pkg: 'bzip2', args: ['-dc'] },
} as const;

type Source = { bytes: Uint8Array } | { path: string };

function streamThrough(source: Source, transform: NodeJS.ReadWriteStream): AsyncIterable<Uint8Array> {
  const src = 'bytes' in source ? Readable.from([source.bytes]) : createReadStream(source.path, { highWaterMark: 1 << 20 });
  // pipeline destroys the last stream with the first error, so iteration rethrows it.
  return pipeline(src, transform, () => {}) as unknown as AsyncIterable<Uint8Array>;
}

async function* hostDecompress(kind: keyof typeof HOST_TOOLS, source: Source, origin: string): AsyncGenerator<Uint8Array> {
  const { tool, pkg, args } = HOST_TOOLS[kind];
  const { execa } = await import('execa'); // loaded on demand: bzip2 inputs are rare
  const proc = execa(tool, [...args], {
    ...('bytes' in source ? { input: source.bytes } : { inputFile: source.path }),
    buffer: { stdout: false, stderr: true },
    encoding: 'buffer',
  });
  let finished = false;
  try {
    for await (const chunk of proc.stdout) yield chunk as Uint8Array;
    await proc;
    finished = true;
  } catch (err) {
    const e = err as { code?: string; stderr?: Uint8Array; exitCode?: number };
    if (e.code === 'ENOENT') throw new MissingToolError(tool, pkg, `needed to decompress ${origin}`);
    const why = e.stderr ? new TextDecoder().decode(e.stderr).trim() : String(err);
    throw new InputError(`${origin}: ${tool} decompression failed: ${why}`, { cause: err });
  } finally {
    // The consumer stopped early (e.g. a bad tar entry): do not leave the process running.
    if (!finished) {
      proc.kill();
      await proc.catch(() => {});
    }
  }
}

function decode(kind: Compression, source: Source, origin: string): AsyncIterable<Uint8Array> {
  switch (kind) {
    case 'none':
      return 'bytes' in source ? (async function* () { yield source.bytes; })() : fileChunks(source.path);
    case 'gzip':
      return streamThrough(source, createGunzip());
    case 'zstd':
      return 'bytes' in source
        ? zstdDecompress(source.bytes, origin)
        : (async function* () { yield* zstdDecompress(await readFile(source.path), origin); })();
    case 'xz':
      return 'bytes' in source
        ? xzDecode(source.bytes, origin)
        : (async function* () { yield* xzDecode(await readFile(source.path), origin); })();
    case 'bzip2':
      return hostDecompress(kind, source, origin);
  }
}

/** Decompresses in-memory data of any supported kind (or passes it through). */
export function decompressBytes(data: Uint8Array, origin: string): AsyncIterable<Uint8Array> {
  return decode(sniffCompression(data.subarray(0, 8)), { bytes: data }, origin);
}

/** Decompresses a host file of any supported kind, streaming where the codec allows. */
export async function decompressFile(path: string, origin: string): Promise<{ kind: Compression; chunks: AsyncIterable<Uint8Array> }> {
  const fh = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new InputError(`${origin}: cannot open ${path}: ${err.code ?? err.message}`, { cause: err });
  });
  const head = new Uint8Array(8);
  try {
    await fh.read(head, 0, 8, 0);
  } finally {
    await fh.close();
  }
  const kind = sniffCompression(head);
  return { kind, chunks: decode(kind, { path }, origin) };
}

async function* fileChunks(path: string): AsyncGenerator<Uint8Array> {
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) yield c as Uint8Array;
}

export const collect = collectBytes;

/** Decompressed bytes of a small compressed blob (a kernel module, a control.tar). */
export async function decompressToBytes(data: Uint8Array, origin: string): Promise<Uint8Array> {
  try {
    return await collect(decompressBytes(data, origin));
  } catch (err) {
    if (err instanceof OssifyError) throw err;
    throw new InputError(`${origin}: cannot decompress: ${(err as Error).message}`, { cause: err });
  }
}
