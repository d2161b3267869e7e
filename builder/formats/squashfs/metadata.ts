import type { Compressor } from './compress.ts';
import { METADATA_SIZE, METADATA_UNCOMPRESSED } from './constants.ts';

/**
 * A squashfs metadata stream (inode table, directory table, lookup tables): records are
 * appended as one continuous byte stream, cut into 8 KiB pieces, each compressed on its own
 * and stored behind a 16-bit size header. A position in the stream is addressed as
 * (on-disk offset of its block relative to the table start, offset inside the block).
 */
export class MetadataWriter {
  private readonly chunks: Uint8Array[] = [];
  private diskBytes = 0;
  private readonly pending = new Uint8Array(METADATA_SIZE);
  private fill = 0;
  /** Uncompressed bytes appended so far (the stream's virtual length). */
  private streamBytes = 0;

  constructor(private readonly comp: Compressor | null) {}

  /** Where the next appended byte will live. */
  get position(): { block: number; offset: number } {
    return { block: this.diskBytes, offset: this.fill };
  }

  get uncompressedLength(): number {
    return this.streamBytes;
  }

  /** On-disk block offsets, one per flushed block, for lookup tables' location lists. */
  readonly blockStarts: number[] = [];

  append(data: Uint8Array): void {
    let off = 0;
    while (off < data.length) {
      const n = Math.min(METADATA_SIZE - this.fill, data.length - off);
      this.pending.set(data.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      this.streamBytes += n;
      if (this.fill === METADATA_SIZE) this.flushBlock();
    }
  }

  private flushBlock(): void {
    if (this.fill === 0) return;
    const raw = this.pending.subarray(0, this.fill);
    const packed = this.comp?.compress(raw) ?? null;
    const body = packed ?? raw.slice();
    const hdr = new Uint8Array(2);
    new DataView(hdr.buffer).setUint16(0, packed ? body.length : body.length | METADATA_UNCOMPRESSED, true);
    this.blockStarts.push(this.diskBytes);
    this.chunks.push(hdr, body);
    this.diskBytes += 2 + body.length;
    this.fill = 0;
  }

  /** Flushes the partial last block and returns the table's bytes. */
  finish(): { chunks: Uint8Array[]; size: number } {
    this.flushBlock();
    return { chunks: this.chunks, size: this.diskBytes };
  }
}

/**
 * A little-endian record builder; every on-disk structure is assembled with it so the
 * encoders read like the format tables.
 */
export class Rec {
  private buf: Uint8Array;
  private dv: DataView;
  len = 0;
  constructor(cap = 64) {
    this.buf = new Uint8Array(cap);
    this.dv = new DataView(this.buf.buffer);
  }
  private need(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.dv = new DataView(next.buffer);
  }
  u8(v: number): this {
    this.need(1);
    this.buf[this.len++] = v;
    return this;
  }
  u16(v: number): this {
    this.need(2);
    this.dv.setUint16(this.len, v, true);
    this.len += 2;
    return this;
  }
  i16(v: number): this {
    this.need(2);
    this.dv.setInt16(this.len, v, true);
    this.len += 2;
    return this;
  }
  u32(v: number): this {
    this.need(4);
    this.dv.setUint32(this.len, v >>> 0, true);
    this.len += 4;
    return this;
  }
  i32(v: number): this {
    this.need(4);
    this.dv.setInt32(this.len, v, true);
    this.len += 4;
    return this;
  }
  u64(v: number | bigint): this {
    this.need(8);
    this.dv.setBigUint64(this.len, BigInt(v), true);
    this.len += 8;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.need(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
    return this;
  }
  done(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}
