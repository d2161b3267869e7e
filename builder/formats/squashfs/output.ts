import type { FileHandle } from 'node:fs/promises';

/**
 * Sequential image output with a large write buffer. Writing is append-only except for
 * `rewindTo`, used when a file turned out to duplicate an earlier one after its blocks were
 * already written: the next bytes simply overwrite them.
 */
export class ImageOutput {
  private buf: Buffer;
  private fill = 0;
  /** File offset of buf[0]. */
  private base: number;

  constructor(
    private readonly fh: FileHandle,
    start: number,
    bufSize = 4 << 20,
  ) {
    this.base = start;
    this.buf = Buffer.allocUnsafe(bufSize);
  }

  get position(): number {
    return this.base + this.fill;
  }

  async write(data: Uint8Array): Promise<void> {
    if (data.length >= this.buf.length) {
      await this.flush();
      await writeAll(this.fh, data, this.base);
      this.base += data.length;
      return;
    }
    if (this.fill + data.length > this.buf.length) await this.flush();
    this.buf.set(data, this.fill);
    this.fill += data.length;
  }

  async rewindTo(pos: number): Promise<void> {
    if (pos >= this.base) {
      this.fill = pos - this.base;
      return;
    }
    await this.flush();
    this.base = pos;
  }

  async flush(): Promise<void> {
    if (this.fill === 0) return;
    await writeAll(this.fh, this.buf.subarray(0, this.fill), this.base);
    this.base += this.fill;
    this.fill = 0;
  }
}

export async function writeAll(fh: FileHandle, data: Uint8Array, pos: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, pos + done);
    done += bytesWritten;
  }
}
