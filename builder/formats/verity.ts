import { createHash, type Hash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import { InputError } from '../util/errors.ts';
import { derivedGuid } from '../util/guid.ts';
import type { BlockSink } from '../util/sink.ts';

/**
 * dm-verity hash tree and superblock, byte-compatible with `veritysetup format` defaults
 * (cryptsetup 2.x): format version 1, sha256, 4096-byte data and hash blocks, a 32-byte
 * salt hashed *before* each block, one superblock at the start of the hash area.
 *
 * Layout of what `computeVerity` returns in `tree`, to be written at `hashOffset` of the
 * device (or of a separate hash device):
 *
 *   [superblock, 512 bytes, zero-padded to one hash block]
 *   [level L-1: the single top block] [level L-2] … [level 0: digests of the data blocks]
 *
 * Top level first, every level padded to whole hash blocks: that is how veritysetup lays it
 * out, so the kernel's `hash_start_block` is simply the block after the superblock.
 *
 * Data that is not a multiple of the data block size is hashed as if zero-padded to the next
 * block. The caller must make that true on the device: the bytes between the end of the data
 * and `hashOffset` must be zeros (a fresh sparse image file is; a reused block device is
 * NOT — write the padding explicitly). veritysetup itself would silently leave a partial
 * last block unverified, which is why ossify pads instead.
 */

export const VERITY_SUPERBLOCK_SIZE = 512;
const SIGNATURE = 'verity\0\0';
const FORMAT_VERSION = 1;
const ALGORITHM = 'sha256';
const DIGEST_SIZE = 32;
const DEFAULT_BLOCK = 4096;
const DEFAULT_SALT_SIZE = 32;
const MAX_SALT_SIZE = 256;
const READ_CHUNK = 1 << 20;

export interface VerityOptions {
  /** Bytes; a power of two from 512 to 1 MiB. Default 4096. */
  dataBlockSize?: number;
  /** Bytes; a power of two from 512 to 1 MiB. Default 4096. */
  hashBlockSize?: number;
  /** Up to 256 bytes. Default: derived from the data's sha256 (never random). */
  salt?: Uint8Array;
  /**
   * Where the superblock goes (bytes, a multiple of the hash block size): on the data device
   * past its end, or 0 on a separate hash device. Default: right after the data's last block.
   */
  hashOffset?: number;
  /**
   * The data's sha256 (hex), when the caller already knows it (e.g. the squashfs writer's
   * digest): it saves the extra read pass that deriving the salt otherwise needs.
   */
  dataSha256?: string;
}

/** The numbers a verity device is opened with; everything here is also in the superblock. */
export interface VerityParams {
  /** Hex, 64 characters: what the kernel command line / release.json must pin. */
  rootHash: string;
  /** Hex. */
  salt: string;
  dataBlocks: number;
  dataBlockSize: number;
  hashBlockSize: number;
  /** Byte offset of the superblock (and the tree after it) on the hash device. */
  hashOffset: number;
}

export interface VerityResult extends VerityParams {
  algorithm: 'sha256';
  /** Lowercase RFC 4122 text, as `veritysetup dump` prints it; derived from the root hash. */
  uuid: string;
  /** Bytes of data actually read; `dataBlocks * dataBlockSize - dataSize` zeros must follow it. */
  dataSize: number;
  /** Superblock + levels; write it at `hashOffset`. */
  tree: Uint8Array;
}

function checkBlockSize(n: number, what: string): void {
  if (!Number.isInteger(n) || n < 512 || n > 1 << 20 || (n & (n - 1)) !== 0) {
    throw new InputError(`verity: ${what} ${n} is not a power of two between 512 and 1048576`);
  }
}

/** Content-derived salt: the same data always yields the same tree and root hash. */
export function deriveVeritySalt(dataSha256: string): Uint8Array {
  return createHash('sha256').update('ossify verity salt\0').update(dataSha256).digest();
}

/**
 * Streaming hasher: feed the data in any chunking with `update`, then `finish`. Memory is the
 * level-0 digests (1/128 of the data with the defaults) plus one partial block.
 */
export class VerityHasher {
  readonly dataBlockSize: number;
  readonly hashBlockSize: number;
  readonly salt: Uint8Array;
  /** sha256 already fed the salt; each block hash is a copy of it, so the salt is hashed once. */
  private readonly salted: Hash;
  private readonly partial: Buffer;
  private partialLen = 0;
  private dataSize = 0;
  private readonly perBlock: number;
  /** Level 0, one hash block per entry; the last one is being filled. */
  private readonly level0: Buffer[] = [];
  private level0Fill = 0;
  private finished = false;

  constructor(opts: { salt: Uint8Array; dataBlockSize?: number; hashBlockSize?: number }) {
    this.dataBlockSize = opts.dataBlockSize ?? DEFAULT_BLOCK;
    this.hashBlockSize = opts.hashBlockSize ?? DEFAULT_BLOCK;
    checkBlockSize(this.dataBlockSize, 'data block size');
    checkBlockSize(this.hashBlockSize, 'hash block size');
    if (opts.salt.length > MAX_SALT_SIZE) throw new InputError(`verity: salt is ${opts.salt.length} bytes, at most ${MAX_SALT_SIZE}`);
    this.salt = Uint8Array.from(opts.salt);
    this.salted = createHash('sha256').update(this.salt);
    this.partial = Buffer.alloc(this.dataBlockSize);
    // Version 1 pads each digest to a power of two (32 stays 32) and uses whole powers of two per block.
    this.perBlock = 1 << Math.floor(Math.log2(this.hashBlockSize / DIGEST_SIZE));
  }

  private hashBlock(block: Uint8Array): Buffer {
    return this.salted.copy().update(block).digest();
  }

  private pushDigest(d: Buffer): void {
    let cur = this.level0[this.level0.length - 1];
    if (cur === undefined || this.level0Fill === this.perBlock) {
      cur = Buffer.alloc(this.hashBlockSize);
      this.level0.push(cur);
      this.level0Fill = 0;
    }
    d.copy(cur, this.level0Fill * DIGEST_SIZE);
    this.level0Fill++;
  }

  update(chunk: Uint8Array): void {
    if (this.finished) throw new Error('VerityHasher: update after finish');
    this.dataSize += chunk.length;
    let off = 0;
    const bs = this.dataBlockSize;
    if (this.partialLen > 0) {
      const take = Math.min(bs - this.partialLen, chunk.length);
      this.partial.set(chunk.subarray(0, take), this.partialLen);
      this.partialLen += take;
      off = take;
      if (this.partialLen < bs) return;
      this.pushDigest(this.hashBlock(this.partial));
      this.partialLen = 0;
    }
    for (; off + bs <= chunk.length; off += bs) this.pushDigest(this.hashBlock(chunk.subarray(off, off + bs)));
    if (off < chunk.length) {
      this.partial.set(chunk.subarray(off), 0);
      this.partialLen = chunk.length - off;
    }
  }

  /** Builds the levels and the superblock; `hashOffset` defaults to right after the (padded) data. */
  finish(hashOffset?: number): VerityResult {
    if (this.finished) throw new Error('VerityHasher: finish called twice');
    this.finished = true;
    if (this.partialLen > 0) {
      this.partial.fill(0, this.partialLen);
      this.pushDigest(this.hashBlock(this.partial));
      this.partialLen = 0;
    }
    const dataBlocks = Math.ceil(this.dataSize / this.dataBlockSize);
    if (dataBlocks === 0) throw new InputError('verity: the data is empty');
    const hbs = this.hashBlockSize;
    const offset = hashOffset ?? roundUp(dataBlocks * this.dataBlockSize, hbs);
    if (!Number.isSafeInteger(offset) || offset % hbs !== 0) {
      throw new InputError(`verity: hash offset ${offset} is not a multiple of the hash block size ${hbs}`);
    }

    // levels[0] = digests of data blocks; each next level hashes the blocks of the previous.
    // With a single data block there are no levels and the root is that block's digest.
    const levels: Buffer[][] = [];
    let rootHash: Buffer;
    if (dataBlocks === 1) {
      rootHash = this.level0[0]!.subarray(0, DIGEST_SIZE);
    } else {
      levels.push(this.level0);
      for (let below = this.level0; below.length > 1; ) {
        const next: Buffer[] = [];
        for (let i = 0; i < below.length; i += this.perBlock) {
          const blk = Buffer.alloc(hbs);
          const end = Math.min(below.length, i + this.perBlock);
          for (let j = i; j < end; j++) this.hashBlock(below[j]!).copy(blk, (j - i) * DIGEST_SIZE);
          next.push(blk);
        }
        levels.push(next);
        below = next;
      }
      rootHash = this.hashBlock(levels[levels.length - 1]![0]!);
    }

    const rootHex = rootHash.toString('hex');
    const uuid = derivedGuid('ossify verity uuid', rootHex, Buffer.from(this.salt).toString('hex')).toLowerCase();
    const sbBlocks = Math.ceil(VERITY_SUPERBLOCK_SIZE / hbs);
    const levelBlocks = levels.reduce((n, l) => n + l.length, 0);
    const tree = new Uint8Array((sbBlocks + levelBlocks) * hbs);
    tree.set(encodeVeritySuperblock({ uuid, dataBlockSize: this.dataBlockSize, hashBlockSize: hbs, dataBlocks, salt: this.salt }), 0);
    let pos = sbBlocks * hbs;
    for (let i = levels.length - 1; i >= 0; i--) {
      for (const b of levels[i]!) {
        tree.set(b, pos);
        pos += hbs;
      }
    }
    return {
      rootHash: rootHex,
      salt: Buffer.from(this.salt).toString('hex'),
      dataBlocks,
      dataBlockSize: this.dataBlockSize,
      hashBlockSize: hbs,
      hashOffset: offset,
      algorithm: ALGORITHM,
      uuid,
      dataSize: this.dataSize,
      tree,
    };
  }
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export interface VeritySuperblock {
  uuid: string;
  dataBlockSize: number;
  hashBlockSize: number;
  dataBlocks: number;
  salt: Uint8Array;
  algorithm?: string;
}

/** cryptsetup's `struct verity_sb`, little-endian, 512 bytes. */
export function encodeVeritySuperblock(sb: VeritySuperblock): Uint8Array {
  const b = Buffer.alloc(VERITY_SUPERBLOCK_SIZE);
  b.write(SIGNATURE, 0, 'latin1');
  b.writeUInt32LE(FORMAT_VERSION, 8);
  b.writeUInt32LE(1, 12); // hash_type 1 = the "normal" (non-Chrome OS) format
  const uuidHex = sb.uuid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(uuidHex)) throw new InputError(`verity: ${JSON.stringify(sb.uuid)} is not a UUID`);
  Buffer.from(uuidHex, 'hex').copy(b, 16); // uuid_parse order: the text's bytes, not GPT's mixed endian
  b.write(sb.algorithm ?? ALGORITHM, 32, 32, 'latin1');
  b.writeUInt32LE(sb.dataBlockSize, 64);
  b.writeUInt32LE(sb.hashBlockSize, 68);
  b.writeBigUInt64LE(BigInt(sb.dataBlocks), 72);
  b.writeUInt16LE(sb.salt.length, 80);
  b.set(sb.salt, 88);
  return b;
}

export function decodeVeritySuperblock(bytes: Uint8Array): VeritySuperblock & { version: number; hashType: number } {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(bytes.length, VERITY_SUPERBLOCK_SIZE));
  if (b.length < VERITY_SUPERBLOCK_SIZE || b.toString('latin1', 0, 8) !== SIGNATURE) {
    throw new InputError('verity: no superblock (signature "verity\\0\\0" missing)');
  }
  const saltSize = b.readUInt16LE(80);
  if (saltSize > MAX_SALT_SIZE) throw new InputError(`verity: superblock salt size ${saltSize} is over ${MAX_SALT_SIZE}`);
  const hex = b.toString('hex', 16, 32);
  return {
    version: b.readUInt32LE(8),
    hashType: b.readUInt32LE(12),
    uuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
    algorithm: b.toString('latin1', 32, 64).replace(/\0+$/, ''),
    dataBlockSize: b.readUInt32LE(64),
    hashBlockSize: b.readUInt32LE(68),
    dataBlocks: Number(b.readBigUInt64LE(72)),
    salt: Uint8Array.from(b.subarray(88, 88 + saltSize)),
  };
}

async function* readChunks(path: string, length: number): AsyncGenerator<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(READ_CHUNK);
    for (let pos = 0; pos < length; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(READ_CHUNK, length - pos), pos);
      if (bytesRead === 0) throw new InputError(`verity: ${path} shrank while being read (at ${pos} of ${length} bytes)`);
      yield buf.subarray(0, bytesRead);
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/**
 * Hash tree of the file at `dataPath` (the whole file is the data). Reads it in 1 MiB chunks:
 * twice when the salt must be derived (sha256 first), once when `salt` or `dataSha256` is
 * given.
 */
export async function computeVerity(dataPath: string, opts: VerityOptions = {}): Promise<VerityResult> {
  const { size } = await stat(dataPath);
  let salt = opts.salt;
  if (salt === undefined) {
    let sha = opts.dataSha256;
    if (sha === undefined) {
      const h = createHash('sha256');
      for await (const c of readChunks(dataPath, size)) h.update(c);
      sha = h.digest('hex');
    }
    salt = deriveVeritySalt(sha).subarray(0, DEFAULT_SALT_SIZE);
  }
  const hasher = new VerityHasher({ salt, dataBlockSize: opts.dataBlockSize, hashBlockSize: opts.hashBlockSize });
  for await (const c of readChunks(dataPath, size)) hasher.update(c);
  return hasher.finish(opts.hashOffset);
}

/**
 * Writes what follows the data on a partition (or image) that already holds the data at
 * `base`: explicit zeros from the end of the data to the end of its last block (a reused
 * device may hold stale bytes there, and they are hashed), then the superblock and tree at
 * `hashOffset`.
 */
export async function writeVerityTree(sink: BlockSink, v: VerityResult, base = 0): Promise<void> {
  const dataEnd = v.dataBlocks * v.dataBlockSize;
  if (dataEnd > v.dataSize) await sink.write(base + v.dataSize, new Uint8Array(dataEnd - v.dataSize));
  await sink.write(base + v.hashOffset, v.tree);
}

export type VerityCorruptionPolicy = 'eio' | 'restart' | 'panic';

export interface VerityTableOptions {
  /** Block device of the data, e.g. `/dev/vda2` or `254:2`. */
  dataDevice: string;
  /**
   * Block device holding the superblock and tree; defaults to `dataDevice` (tree after the
   * data). For a separate hash device pass the offset the tree was written at there, e.g.
   * `verityTable({ ...v, hashOffset: 0 }, …)`.
   */
  hashDevice?: string;
  /** Device-mapper name: the device appears as `/dev/mapper/<name>`. Default `root`. */
  name?: string;
  /** What the kernel does on a mismatch; default `restart`, so boot counting can fall back. */
  onCorruption?: VerityCorruptionPolicy;
}

export interface VerityOpenCommands {
  /** The device-mapper table line (`dmsetup table` format, sectors of 512 bytes). */
  table: string;
  /** `dmsetup create` argv: needs only libdevmapper, trusts nothing on disk but the tree. */
  dmsetupArgv: string[];
  /**
   * `veritysetup open` argv: reads and checks the superblock at `hashOffset`. It opens the
   * devices exclusively, so it fails while another mapping uses them.
   */
  veritysetupOpenArgv: string[];
  /**
   * Environment for either command in an initramfs without udev: libdevmapper then creates
   * `/dev/mapper/<name>` itself instead of waiting for udev to do it.
   */
  env: Record<string, string>;
  /** Where the verified device appears. */
  devicePath: string;
}

/**
 * How an initramfs opens the verity device. The kernel's `hash_start_block` counts hash
 * blocks from the start of the hash device to the top level of the tree, i.e. the block after
 * the superblock.
 */
export function verityTable(v: VerityParams, opts: VerityTableOptions): VerityOpenCommands {
  const name = opts.name ?? 'root';
  if (!/^[A-Za-z0-9_.+-]{1,127}$/.test(name) || name === '.' || name === '..') {
    throw new InputError(`verity: device-mapper name ${JSON.stringify(name)} must be 1–127 of A-Z a-z 0-9 _ . + -`);
  }
  const hashDevice = opts.hashDevice ?? opts.dataDevice;
  const policy = opts.onCorruption ?? 'restart';
  if (!/^[0-9a-f]{64}$/.test(v.rootHash)) throw new InputError(`verity: root hash ${JSON.stringify(v.rootHash)} is not 64 hex digits`);
  if (v.hashOffset % v.hashBlockSize !== 0) throw new InputError(`verity: hash offset ${v.hashOffset} is not a multiple of ${v.hashBlockSize}`);
  const dataEnd = v.dataBlocks * v.dataBlockSize;
  if (hashDevice === opts.dataDevice && v.hashOffset < dataEnd) {
    throw new InputError(`verity: hash offset ${v.hashOffset} lies inside the data on ${opts.dataDevice} (which ends at ${dataEnd})`);
  }
  const sectors = (v.dataBlocks * v.dataBlockSize) / 512;
  const hashStart = v.hashOffset / v.hashBlockSize + Math.ceil(VERITY_SUPERBLOCK_SIZE / v.hashBlockSize);
  const optional = policy === 'eio' ? [] : ['1', policy === 'restart' ? 'restart_on_corruption' : 'panic_on_corruption'];
  const table = [
    0, sectors, 'verity', FORMAT_VERSION, opts.dataDevice, hashDevice, v.dataBlockSize, v.hashBlockSize,
    v.dataBlocks, hashStart, ALGORITHM, v.rootHash, v.salt === '' ? '-' : v.salt, ...optional,
  ].join(' ');
  const policyFlag = policy === 'eio' ? [] : [policy === 'restart' ? '--restart-on-corruption' : '--panic-on-corruption'];
  return {
    table,
    dmsetupArgv: ['dmsetup', 'create', name, '--readonly', '--table', table],
    veritysetupOpenArgv: [
      'veritysetup', 'open', opts.dataDevice, name, hashDevice, v.rootHash, `--hash-offset=${v.hashOffset}`, ...policyFlag,
    ],
    env: { DM_DISABLE_UDEV: '1' },
    devicePath: `/dev/mapper/${name}`,
  };
}

/** Reads `length` bytes at `offset` of a device or image (a partition window, a file). */
export type RangeReader = (offset: number, length: number) => Promise<Uint8Array>;

/**
 * The hash tree of `size` bytes read through `read` (e.g. the data range of a ROOT partition
 * on a disk), with a known salt: what the installer recomputes over what it wrote, so the
 * root hash it checks comes from the medium and not from the file it copied.
 */
export async function computeVerityOfRange(read: RangeReader, size: number, opts: { salt: Uint8Array; hashOffset?: number; dataBlockSize?: number; hashBlockSize?: number }): Promise<VerityResult> {
  const hasher = new VerityHasher({ salt: opts.salt, dataBlockSize: opts.dataBlockSize, hashBlockSize: opts.hashBlockSize });
  for (let pos = 0; pos < size; pos += READ_CHUNK) hasher.update(await read(pos, Math.min(READ_CHUNK, size - pos)));
  return hasher.finish(opts.hashOffset);
}

/**
 * Where a root slot keeps its verity data: the squashfs at 0, zeros up to the next 4 KiB, then
 * the superblock and tree. One rule for the build, the installers and the initramfs.
 */
export function slotHashOffset(dataSize: number, blockSize = DEFAULT_BLOCK): number {
  return roundUp(dataSize, blockSize);
}
