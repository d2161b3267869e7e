import { type FileHandle, open } from 'node:fs/promises';
import { OssifyError } from '../util/errors.ts';

/** Where an upload reads its bytes; random access so a resumed upload starts where the registry stands. */
export interface BlobSource {
  size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  stream(offset: number): AsyncIterable<Uint8Array>;
}

export function bytesBlobSource(bytes: Uint8Array): BlobSource {
  return {
    size: bytes.length,
    read: async (o, n) => bytes.subarray(o, o + n),
    async *stream(o) {
      yield bytes.subarray(o);
    },
  };
}

export function fileBlobSource(path: string, size: number): BlobSource {
  const readFrom = async (fh: FileHandle, offset: number, length: number): Promise<Uint8Array> => {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
      if (bytesRead === 0) throw new OssifyError(`${path} is shorter than its descriptor says (${size} bytes)`);
      got += bytesRead;
    }
    return buf;
  };
  return {
    size,
    async read(offset, length) {
      const fh = await open(path, 'r');
      try {
        return await readFrom(fh, offset, length);
      } finally {
        await fh.close();
      }
    },
    async *stream(offset) {
      const fh = await open(path, 'r');
      try {
        const step = 1 << 20;
        for (let o = offset; o < size; o += step) yield await readFrom(fh, o, Math.min(step, size - o));
      } finally {
        await fh.close();
      }
    },
  };
}
