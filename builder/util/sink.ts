import type { FileHandle } from 'node:fs/promises';

/**
 * Where positioned writers (FAT, GPT, disk assembly) put their bytes. Writers emit only the
 * regions they fill, so a disk image on a file stays sparse.
 */
export interface BlockSink {
  write(offset: number, data: Uint8Array): Promise<void>;
}

export function fileHandleSink(fh: FileHandle, base = 0): BlockSink {
  return {
    async write(offset, data) {
      let done = 0;
      while (done < data.length) {
        const { bytesWritten } = await fh.write(data, done, data.length - done, base + offset + done);
        done += bytesWritten;
      }
    },
  };
}

/** A sink into a buffer, for tests and small images. */
export function bufferSink(buf: Uint8Array, base = 0): BlockSink {
  return {
    async write(offset, data) {
      if (base + offset + data.length > buf.length) throw new RangeError(`write past end of buffer at ${base + offset}`);
      buf.set(data, base + offset);
    },
  };
}
