import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { OssifyError } from './errors.ts';
import { mergeExtents, type Extent } from './extents.ts';
import { sha256File } from './hash.ts';

/**
 * The sha256 of a sparse file whose writer recorded every range it wrote (recordingSink):
 * the bytes of those ranges are read from the file, everything else is a hole that reads as
 * zeros, so zeros from memory are hashed in its place. The result is the sha256 of the file's
 * bytes, what `sha256sum` prints, without reading hundreds of MiB of holes through the kernel
 * (a default disk.raw is 674 MiB with about 18 MiB written). It holds only while nothing else
 * wrote the file: callers pass the extents of the writer that made it, or of every writer.
 */

const ZEROS = new Uint8Array(4 << 20);
const READ = 4 << 20;

export async function sha256Sparse(path: string, size: number, extents: readonly Extent[]): Promise<string> {
  const ranges = mergeExtents(extents);
  const last = ranges[ranges.length - 1];
  if (last && last.offset + last.length > size) throw new OssifyError(`${path}: a written range ends at ${last.offset + last.length}, past the file's ${size} bytes`);
  const h = createHash('sha256');
  const zeros = (n: number) => {
    for (; n > 0; n -= ZEROS.length) h.update(n >= ZEROS.length ? ZEROS : ZEROS.subarray(0, n));
  };
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    if (st.size !== size) throw new OssifyError(`${path} is ${st.size} bytes, expected ${size}`);
    const buf = new Uint8Array(READ);
    let pos = 0;
    for (const e of ranges) {
      zeros(e.offset - pos);
      for (let at = e.offset, end = e.offset + e.length; at < end; ) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(READ, end - at), at);
        if (bytesRead === 0) throw new OssifyError(`${path}: unexpected end of file at ${at}`);
        h.update(buf.subarray(0, bytesRead));
        at += bytesRead;
      }
      pos = e.offset + e.length;
    }
    zeros(size - pos);
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** A file's sha256 and size; when its writer's ranges are known, only those are read (sha256Sparse). */
export async function fileDigest(path: string, extents?: readonly Extent[]): Promise<{ sha256: string; size: number }> {
  const { size } = await stat(path);
  return { sha256: extents ? await sha256Sparse(path, size, extents) : await sha256File(path), size };
}
