import { collectBytes } from '../util/bytes.ts';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { OssifyError } from '../util/errors.ts';

/**
 * File contents by reference: writers pull the bytes when they write them, so a tree far
 * larger than memory can pass through the pipeline. `stream()` may be called more than once.
 */
export interface Content {
  readonly size: number;
  stream(): AsyncIterable<Uint8Array>;
  /** Where the bytes come from, for error messages (never written into artifacts). */
  readonly origin: string;
}

export function bytesContent(data: Uint8Array, origin = '<memory>'): Content {
  return {
    size: data.length,
    origin,
    async *stream() {
      yield data;
    },
  };
}

export function textContent(text: string, origin = '<memory>'): Content {
  return bytesContent(new TextEncoder().encode(text), origin);
}

/**
 * A file on the host, read only when written. A file that changes size while being read is
 * an error, not a silently corrupt image.
 */
export function hostFileContent(path: string, size: number): Content {
  return {
    size,
    origin: path,
    async *stream() {
      let seen = 0;
      for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
        const buf = chunk as Buffer;
        seen += buf.length;
        if (seen > size) break;
        yield buf;
      }
      if (seen !== size) {
        const now = await stat(path).catch(() => undefined);
        throw new OssifyError(
          `${path} changed while being read: expected ${size} bytes, ${now ? `now ${now.size}` : 'it vanished'}`,
        );
      }
    },
  };
}

export function readContent(c: Content): Promise<Uint8Array> {
  return collectBytes(c.stream());
}
