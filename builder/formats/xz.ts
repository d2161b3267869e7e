import { crc32 } from 'node:zlib';

/**
 * The .xz container (tukaani.org/xz/xz-file-format.txt), not the LZMA2 codec: where the
 * blocks of a file are, read from the stream indexes at its end, and how to wrap one block
 * as a stream of its own. Blocks are independent by design, so a multi-block file (dpkg-deb
 * and `xz -T` write them) can be decoded block by block on several threads, and the bytes
 * out are the file's bytes whatever the order of work.
 */

export interface XzBlock {
  /** Offset of the block header in the file. */
  offset: number;
  /** Header + compressed data + check, without block padding (the index's "unpadded size"). */
  unpaddedSize: number;
  uncompressedSize: number;
  /** Stream flags of the stream holding the block (byte 1 is the check type). */
  flags: Uint8Array;
}

const HEADER_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
const FOOTER_MAGIC = [0x59, 0x5a];

export class XzFormatError extends Error {}

const le32 = (b: Uint8Array, at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
const round4 = (n: number) => (n + 3) & ~3;

function readVarint(b: Uint8Array, pos: { at: number }, end: number): number {
  let value = 0;
  for (let i = 0; i < 9; i++) {
    if (pos.at >= end) throw new XzFormatError('index ends inside a number');
    const byte = b[pos.at++]!;
    value += (byte & 0x7f) * 2 ** (7 * i);
    if (!(byte & 0x80)) {
      if (byte === 0 && i > 0) throw new XzFormatError('index number not in its shortest form');
      return value;
    }
  }
  throw new XzFormatError('index number too long');
}

function writeVarint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
}

/**
 * Every block of every stream, in file order, from the indexes alone (no block is read).
 * Throws XzFormatError when the file is not a well-formed .xz container.
 */
export function xzBlocks(file: Uint8Array): XzBlock[] {
  const streams: XzBlock[][] = [];
  let end = file.length;
  while (end > 0) {
    // Stream padding: zero bytes in groups of four between and after streams.
    while (end >= 4 && le32(file, end - 4) === 0) end -= 4;
    if (end === 0) break;
    if (end < 24) throw new XzFormatError('truncated stream');
    const footer = end - 12;
    if (file[footer + 10] !== FOOTER_MAGIC[0] || file[footer + 11] !== FOOTER_MAGIC[1]) throw new XzFormatError('no stream footer');
    if (crc32(file.subarray(footer + 4, footer + 10)) !== le32(file, footer)) throw new XzFormatError('stream footer CRC32 mismatch');
    const flags = file.slice(footer + 8, footer + 10);
    const indexSize = (le32(file, footer + 4) + 1) * 4;
    const indexStart = footer - indexSize;
    if (indexStart < 12) throw new XzFormatError('index larger than the stream');
    if (file[indexStart] !== 0) throw new XzFormatError('no index indicator');
    if (crc32(file.subarray(indexStart, footer - 4)) !== le32(file, footer - 4)) throw new XzFormatError('index CRC32 mismatch');
    const pos = { at: indexStart + 1 };
    const count = readVarint(file, pos, footer - 4);
    const records: { unpaddedSize: number; uncompressedSize: number }[] = [];
    for (let i = 0; i < count; i++) {
      const unpaddedSize = readVarint(file, pos, footer - 4);
      const uncompressedSize = readVarint(file, pos, footer - 4);
      records.push({ unpaddedSize, uncompressedSize });
    }
    const blocksSize = records.reduce((s, r) => s + round4(r.unpaddedSize), 0);
    const start = indexStart - blocksSize - 12;
    if (start < 0) throw new XzFormatError('blocks larger than the stream');
    for (let i = 0; i < 6; i++) if (file[start + i] !== HEADER_MAGIC[i]) throw new XzFormatError('no stream header where the index puts it');
    if (file[start + 6] !== flags[0] || file[start + 7] !== flags[1]) throw new XzFormatError('stream header and footer flags differ');
    let at = start + 12;
    const blocks = records.map((r) => {
      const b = { offset: at, unpaddedSize: r.unpaddedSize, uncompressedSize: r.uncompressedSize, flags };
      at += round4(r.unpaddedSize);
      return b;
    });
    streams.unshift(blocks);
    end = start;
  }
  return streams.flat();
}

/**
 * One block of `file` as a complete single-block .xz stream, decodable on its own, as the
 * pieces to write one after the other (the block itself is a view, not a copy: blocks are
 * tens of megabytes and the caller copies them once, straight to where they are decoded).
 */
export function singleBlockStream(file: Uint8Array, block: XzBlock): Uint8Array[] {
  const blockBytes = file.subarray(block.offset, block.offset + round4(block.unpaddedSize));
  const index: number[] = [0];
  writeVarint(index, 1);
  writeVarint(index, block.unpaddedSize);
  writeVarint(index, block.uncompressedSize);
  while (index.length % 4) index.push(0);
  const indexBytes = new Uint8Array(index.length + 4);
  indexBytes.set(index);
  new DataView(indexBytes.buffer).setUint32(index.length, crc32(indexBytes.subarray(0, index.length)), true);

  const header = new Uint8Array(12);
  header.set(HEADER_MAGIC);
  header.set(block.flags, 6);
  new DataView(header.buffer).setUint32(8, crc32(block.flags), true);
  const footer = new Uint8Array(12);
  const fv = new DataView(footer.buffer);
  fv.setUint32(4, indexBytes.length / 4 - 1, true);
  footer.set(block.flags, 8);
  footer.set(FOOTER_MAGIC, 10);
  fv.setUint32(0, crc32(footer.subarray(4, 10)), true);
  return [header, blockBytes, indexBytes, footer];
}
