import { createHash } from 'node:crypto';
import type { Content } from '../../tree/content.ts';
import { isSyncReadable } from '../../tree/from-host.ts';
import { OssifyError } from '../../util/errors.ts';
import { concatBytes } from '../../util/bytes.ts';
import { DATA_UNCOMPRESSED, NO_FRAGMENT } from './constants.ts';
import type { ImageOutput } from './output.ts';
import type { BlockCompressor } from './pool.ts';

/** Where a regular file's bytes ended up: everything its inode needs. */
export interface FileData {
  size: number;
  /** Image offset of the first block (0 when there are none). */
  start: number;
  /** On-disk size of each block; 0 = a hole, bit 24 = stored raw. */
  blocks: number[];
  fragIndex: number;
  fragOffset: number;
  /** Bytes not stored because they were whole zero blocks. */
  sparse: number;
}

export interface FragmentEntry {
  start: number;
  size: number;
}

export interface DataWriterOptions {
  blockSize: number;
  noFragments: boolean;
  alwaysFragments: boolean;
  /** Upper bound on blocks read ahead of the writer (memory stays ~ this × blockSize × 2). */
  maxInFlight: number;
}

/** One unit of output in image order. Filled in when its compression finishes. */
interface Job {
  ready: Promise<void>;
  /** Bytes to write (empty for a hole), and the size field to record. */
  bytes?: Uint8Array;
  sizeField?: number;
  skip?: boolean;
  /** Holds a read-ahead slot until written. */
  counted?: boolean;
  /** Runs when the job reaches the output, with the offset it was written at. */
  onWrite?: (pos: number, sizeField: number) => void;
  rewindTo?: () => number;
}

/** Cheap identity for files: size + SHA-256 of the contents (collisions are not a concern). */
type DedupKey = string;

/**
 * Writes file contents: cuts them into blocks, compresses (possibly in parallel), writes in
 * a fixed order, packs small files and tails into fragment blocks and stores identical
 * files once. Files are read as they are written, so memory is bounded by the read-ahead.
 */
export class DataWriter {
  readonly fragments: FragmentEntry[] = [];
  private fragBuf: Uint8Array;
  private fragFill = 0;
  private readonly scratch: Uint8Array;
  private readonly queue: Job[] = [];
  private draining: Promise<void> | undefined;
  private drainError: unknown;
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  private readonly seen = new Map<DedupKey, FileData>();
  private readonly sizesSeen = new Set<number>();
  dedupedFiles = 0;
  dedupedBytes = 0;

  constructor(
    private readonly out: ImageOutput,
    private readonly comp: BlockCompressor,
    private readonly opts: DataWriterOptions,
  ) {
    this.fragBuf = new Uint8Array(opts.blockSize);
    this.scratch = new Uint8Array(opts.blockSize + 1);
  }

  /**
   * Reads a whole (small) file, checking it still has the size it was scanned with. Also
   * used for read-ahead of contents that can only be streamed.
   */
  static async readAll(content: Content, what: string): Promise<Uint8Array> {
    if (isSyncReadable(content)) {
      try {
        return content.readAllSync();
      } catch (err) {
        throw readError(err, what, content);
      }
    }
    const parts: Uint8Array[] = [];
    let total = 0;
    try {
      for await (const chunk of content.stream()) {
        total += chunk.length;
        if (total > content.size) break;
        parts.push(chunk);
      }
    } catch (err) {
      throw readError(err, what, content);
    }
    if (total !== content.size) {
      throw new OssifyError(`${what} (${content.origin}) changed while being read: expected ${content.size} bytes, got ${total > content.size ? 'more' : total}`);
    }
    return parts.length === 1 ? parts[0]! : concatBytes(parts);
  }

  async writeFile(content: Content, what: string, preread?: Promise<Uint8Array>): Promise<FileData> {
    const { blockSize } = this.opts;
    const size = content.size;
    if (this.drainError) throw this.drainError;
    if (size === 0) {
      return { size: 0, start: 0, blocks: [], fragIndex: NO_FRAGMENT, fragOffset: 0, sparse: 0 };
    }
    if (size < blockSize) {
      // Read synchronously into one reused buffer: tens of thousands of small files then cost
      // no allocation each (the bytes are copied into the fragment block right away).
      if (!preread && isSyncReadable(content)) {
        let data: Uint8Array;
        try {
          data = content.readAllSync(this.scratch);
        } catch (err) {
          throw readError(err, what, content);
        }
        return this.writeSmall(size, data);
      }
      return this.writeSmall(size, await (preread ?? DataWriter.readAll(content, what)));
    }
    // A large file's tail is a short block unless asked to pack it (-always-use-fragments).
    const useFragTail = this.opts.alwaysFragments && !this.opts.noFragments;
    const fullBlocks = Math.floor(size / blockSize);
    const tailLen = size % blockSize;
    const hash = createHash('sha256');
    const fd: FileData = { size, start: -1, blocks: [], fragIndex: NO_FRAGMENT, fragOffset: 0, sparse: 0 };
    const fileJobs: Job[] = [];
    // Duplicates of an earlier file can only exist when one of the same size was seen.
    const maybeDup = this.sizesSeen.has(size);
    this.sizesSeen.add(size);

    let block = new Uint8Array(blockSize);
    let fill = 0;
    let blockNo = 0;
    let total = 0;
    const emitBlock = async (data: Uint8Array) => {
      const idx = blockNo++;
      fd.blocks.push(0);
      const job = await this.enqueue(data, (pos, sizeField) => {
        if (idx === 0) fd.start = pos;
        fd.blocks[idx] = sizeField;
      });
      if (job.sizeField === 0 && job.bytes === undefined) fd.sparse += data.length;
      fileJobs.push(job);
    };

    try {
      for await (const chunk of content.stream()) {
        let off = 0;
        total += chunk.length;
        if (total > size) break;
        hash.update(chunk);
        while (off < chunk.length) {
          const n = Math.min(blockSize - fill, chunk.length - off);
          block.set(chunk.subarray(off, off + n), fill);
          fill += n;
          off += n;
          if (fill === blockSize) {
            await emitBlock(block);
            block = new Uint8Array(blockSize);
            fill = 0;
          }
        }
      }
    } catch (err) {
      throw readError(err, what, content);
    }
    if (total !== size) {
      throw new OssifyError(`${what} (${content.origin}) changed while being read: expected ${size} bytes, got ${total > size ? 'more' : total}`);
    }
    if (blockNo !== fullBlocks || fill !== tailLen) throw new Error('squashfs: block accounting mismatch');

    const key: DedupKey = `${size}:${hash.digest('base64')}`;
    const prior = maybeDup ? this.seen.get(key) : undefined;
    if (prior) {
      // Undo this file's blocks: skip those not yet written and rewind over those that were.
      for (const j of fileJobs) j.skip = true;
      if (fileJobs.length > 0) {
        this.queue.push({ ready: Promise.resolve(), rewindTo: () => fd.start });
        this.kick();
      }
      this.dedupedFiles++;
      this.dedupedBytes += size;
      return prior;
    }

    if (tailLen > 0) {
      const tail = block.subarray(0, tailLen);
      if (useFragTail) this.addFragment(tail, fd);
      else await emitBlock(tail.slice());
    }
    this.seen.set(key, fd);
    return fd;
  }

  /** A file smaller than a block: one fragment (or one short block), deduplicated whole. */
  private async writeSmall(size: number, data: Uint8Array): Promise<FileData> {
    const key: DedupKey = `${size}:${createHash('sha256').update(data).digest('base64')}`;
    const prior = this.seen.get(key);
    if (prior) {
      this.dedupedFiles++;
      this.dedupedBytes += size;
      return prior;
    }
    this.sizesSeen.add(size);
    const fd: FileData = { size, start: 0, blocks: [], fragIndex: NO_FRAGMENT, fragOffset: 0, sparse: 0 };
    if (this.opts.noFragments) {
      // The block travels to a worker: it must own its buffer.
      fd.start = -1;
      fd.blocks.push(0);
      const job = await this.enqueue(new Uint8Array(data), (pos, sizeField) => {
        fd.start = pos;
        fd.blocks[0] = sizeField;
      });
      if (job.sizeField === 0 && job.bytes === undefined) fd.sparse = size;
    } else {
      this.addFragment(data, fd);
    }
    this.seen.set(key, fd);
    return fd;
  }

  private addFragment(tail: Uint8Array, fd: FileData): void {
    if (this.fragFill + tail.length > this.opts.blockSize) this.flushFragment();
    fd.fragIndex = this.fragments.length;
    fd.fragOffset = this.fragFill;
    this.fragBuf.set(tail, this.fragFill);
    this.fragFill += tail.length;
  }

  private flushFragment(): void {
    if (this.fragFill === 0) return;
    const idx = this.fragments.length;
    this.fragments.push({ start: 0, size: 0 });
    const data = this.fragBuf.slice(0, this.fragFill);
    this.fragFill = 0;
    // Fragment blocks are never holes: a zero-filled fragment still has to be readable.
    void this.enqueueNow(data, false, (pos, sizeField) => {
      this.fragments[idx] = { start: pos, size: sizeField };
    });
  }

  /** Queues a block; waits while too many blocks are read ahead of the output. */
  private async enqueue(data: Uint8Array, onWrite: Job['onWrite']): Promise<Job> {
    while (this.inFlight >= this.opts.maxInFlight) {
      await new Promise<void>((r) => this.waiters.push(r));
      if (this.drainError) throw this.drainError;
    }
    return this.enqueueNow(data, true, onWrite);
  }

  private enqueueNow(data: Uint8Array, holes: boolean, onWrite: Job['onWrite']): Job {
    if (this.drainError) throw this.drainError;
    const job: Job = { ready: Promise.resolve() };
    if (onWrite) job.onWrite = onWrite;
    if (holes && isZero(data)) {
      job.sizeField = 0;
    } else {
      this.inFlight++;
      job.counted = true;
      job.ready = this.comp.compress(data).then(({ raw, out }) => {
        if (job.skip) return;
        if (out) {
          job.bytes = out;
          job.sizeField = out.length;
        } else {
          job.bytes = raw;
          job.sizeField = raw.length | DATA_UNCOMPRESSED;
        }
      });
      // Errors surface through the drain loop, in order.
      job.ready.catch(() => {});
    }
    this.queue.push(job);
    this.kick();
    return job;
  }

  private kick(): void {
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
      if (this.queue.length > 0 && !this.drainError) this.kick();
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const job = this.queue[0]!;
        await job.ready;
        this.queue.shift();
        if (job.counted) this.release();
        if (job.rewindTo) {
          const pos = job.rewindTo();
          if (pos >= 0) await this.out.rewindTo(pos);
          continue;
        }
        if (job.skip) continue;
        const pos = this.out.position;
        if (job.bytes) await this.out.write(job.bytes);
        job.onWrite?.(pos, job.sizeField!);
      }
    } catch (err) {
      this.drainError = err;
      for (const w of this.waiters.splice(0)) w();
    }
  }

  private release(): void {
    this.inFlight--;
    const w = this.waiters.shift();
    w?.();
  }

  /** Flushes the last fragment block and waits until everything is written. */
  async finish(): Promise<void> {
    this.flushFragment();
    while (this.draining) await this.draining;
    if (this.drainError) throw this.drainError;
    await this.out.flush();
  }
}

function readError(err: unknown, what: string, content: Content): OssifyError {
  if (err instanceof OssifyError) return err;
  const e = err as NodeJS.ErrnoException;
  const why = e.code === 'ENOENT' ? 'it vanished' : e.message;
  return new OssifyError(`${what}: cannot read ${content.origin}: ${why}`, { cause: err });
}

function isZero(d: Uint8Array): boolean {
  if (d.length > 0 && d[0] !== 0) return false;
  // Word-wise scan; blocks are fresh allocations, so the offset is aligned.
  if (d.byteOffset % 4 === 0 && d.length % 4 === 0) {
    const w = new Uint32Array(d.buffer, d.byteOffset, d.length / 4);
    for (let i = 0; i < w.length; i++) if (w[i] !== 0) return false;
    return true;
  }
  for (let i = 0; i < d.length; i++) if (d[i] !== 0) return false;
  return true;
}
