import { createHash, type Hash } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';

/**
 * A sparse file (a raw disk: hundreds of MiB, a few MiB of it written) as its non-zero
 * chunks. Node cannot ask the filesystem where the holes are (no SEEK_DATA/SEEK_HOLE), so a
 * scan reads the file once, hashing it whole for its digest and keeping each aligned chunk
 * that is not all zeros. Chunks are content-addressed blobs, so disks that share a base
 * (every site of a fleet) share their chunks. Writing one back truncates to the size and
 * writes only the chunks: holes stay holes.
 */

export const SPARSE_CHUNK = 64 << 10;

export interface SparseChunk {
  offset: number;
  length: number;
  sha256: string;
}

export interface SparseImage {
  /** Logical size in bytes. */
  size: number;
  /** sha256 of the whole logical file, zeros included. */
  sha256: string;
  chunkSize: number;
  chunks: SparseChunk[];
}

const READ = 8 << 20;
const ZERO = Buffer.alloc(READ);

export interface ScanOptions {
  chunkSize?: number;
  /** Called with each non-zero chunk (a copy the callee may keep). */
  onChunk?: (data: Buffer, chunk: SparseChunk) => Promise<void>;
  /** Also return the hash state after this many bytes, to finish other files sharing the prefix. */
  checkpointAt?: number;
  /**
   * Scan only from this offset (a multiple of the chunk size): the bytes before it are known,
   * as `prefix` (the hash state after them, consumed) and `prefixChunks` (their chunks).
   */
  from?: { offset: number; hash: Hash; chunks: SparseChunk[] };
  /** false: only find the chunks (no digest of the file or of chunks: `sha256` is ''), for a reader that needs none. */
  digest?: boolean;
}

export async function scanSparse(path: string, opts: ScanOptions = {}): Promise<{ image: SparseImage; checkpoint?: Hash }> {
  const chunkSize = opts.chunkSize ?? SPARSE_CHUNK;
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const start = opts.from?.offset ?? 0;
    if (start % chunkSize !== 0) throw new Error(`scan start ${start} is not a multiple of the chunk size ${chunkSize}`);
    const whole = opts.from?.hash ?? createHash('sha256');
    let checkpoint: Hash | undefined;
    const chunks: SparseChunk[] = (opts.from?.chunks ?? []).filter((c) => c.offset + c.length <= start);
    const buf = Buffer.alloc(READ - (READ % chunkSize));
    for (let pos = start; pos < size; ) {
      const want = Math.min(buf.length, size - pos);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, pos + got);
        if (bytesRead === 0) throw new Error(`${path} shrank while it was read`);
        got += bytesRead;
      }
      const data = buf.subarray(0, got);
      const cp = opts.checkpointAt;
      if (cp !== undefined && cp >= pos && cp < pos + got) {
        whole.update(data.subarray(0, cp - pos));
        checkpoint = whole.copy();
        whole.update(data.subarray(cp - pos));
      } else if (opts.digest !== false) whole.update(data);
      for (let o = 0; o < got; o += chunkSize) {
        const c = data.subarray(o, Math.min(o + chunkSize, got));
        if (c.equals(ZERO.subarray(0, c.length))) continue;
        const copy = Buffer.from(c);
        const chunk = { offset: pos + o, length: copy.length, sha256: opts.digest === false ? '' : createHash('sha256').update(copy).digest('hex') };
        chunks.push(chunk);
        if (opts.onChunk) await opts.onChunk(copy, chunk);
      }
      pos += got;
    }
    if (opts.checkpointAt === size) checkpoint = whole.copy();
    return { image: { size, sha256: opts.digest === false ? '' : whole.digest('hex'), chunkSize, chunks }, ...(checkpoint ? { checkpoint } : {}) };
  } finally {
    await fh.close();
  }
}

/** Writes the image at `dest` (created or truncated): only its chunks are written. */
export async function writeSparse(dest: string, image: SparseImage, blobPath: (c: SparseChunk) => string): Promise<void> {
  const fh = await open(dest, 'w');
  try {
    await fh.truncate(image.size);
    for (const c of image.chunks) {
      const data = await readFile(blobPath(c));
      if (data.length !== c.length) throw new Error(`chunk ${c.sha256} is ${data.length} bytes, expected ${c.length}`);
      let done = 0;
      while (done < data.length) done += (await fh.write(data, done, data.length - done, c.offset + done)).bytesWritten;
    }
  } finally {
    await fh.close();
  }
}

/**
 * The hash state after the first `end` bytes of the image, computed from its chunks without
 * reading the file (zeros are fed from memory). For a stage that changes only bytes past
 * `end` (a site seed at the end of the disk), the rest is then all that must be hashed.
 */
export async function hashPrefix(image: SparseImage, end: number, blobPath: (c: SparseChunk) => string): Promise<Hash> {
  const h = createHash('sha256');
  let pos = 0;
  const zeros = (n: number) => {
    while (n > 0) {
      const k = Math.min(n, ZERO.length);
      h.update(ZERO.subarray(0, k));
      n -= k;
    }
  };
  for (const c of image.chunks) {
    if (c.offset >= end) break;
    zeros(c.offset - pos);
    const data = await readFile(blobPath(c));
    const take = Math.min(c.length, end - c.offset);
    h.update(data.subarray(0, take));
    pos = c.offset + take;
  }
  zeros(end - pos);
  return h;
}

/** Finishes `h` (the state after `from` bytes) with the rest of the file at `path`. */
export async function hashFileFrom(path: string, from: number, h: Hash): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const buf = Buffer.alloc(READ);
    for (let pos = from; pos < size; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
      if (bytesRead === 0) throw new Error(`${path} shrank while it was read`);
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}
