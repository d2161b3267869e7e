import { createHash, type Hash } from 'node:crypto';
import { constants, createReadStream, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { copyFile, link, mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { BlobCache } from '../inputs/cache.ts';
import { OssifyError } from '../util/errors.ts';
import { sha256Hex } from '../util/hash.ts';
import { CACHE_FORMAT } from './key.ts';
import { scanSparse, writeSparse, type ScanOptions, type SparseImage } from './sparse.ts';

/**
 * The stage cache (docs/fleet.md): stage outputs stored as content-addressed blobs
 * (`<cache>/stages/blobs/sha256/<hex>`, the input cache's BlobCache layout) plus one small
 * record per stage key (`<cache>/stages/records/<k[0:2]>/<key>.json`) naming the blobs.
 * A record is only used after every blob it names re-hashes to its digest; one that does
 * not is dropped with a warning and the stage runs again, so a corrupted cache costs time,
 * never a wrong byte.
 */

/** A file a stage wrote into the build directory. */
export interface FileOutput {
  sha256: string;
  size: number;
}

/** A file kept as its non-zero chunks (a sparse disk image). */
export interface SparseOutput {
  sparse: SparseImage;
}

export interface StageRecord {
  format: typeof CACHE_FORMAT;
  key: string;
  step: string;
  /** What downstream keys see of this stage: a digest of everything it produced. */
  output: string;
  /** Files in the build directory, by name relative to it. */
  files: Record<string, FileOutput | SparseOutput>;
  /** Context values the step set (serialized; Uint8Array and Content as `{$blob}` references). */
  values: Record<string, unknown>;
  /** Source records the step added (what build.json and the SBOM list). */
  sources: unknown[];
  /** For `ossify cache ls`: which build made it. */
  made?: { profile: string; site?: string };
}

export function isSparse(o: FileOutput | SparseOutput): o is SparseOutput {
  return 'sparse' in o;
}

/** Every blob digest a record needs. */
export function recordBlobs(r: StageRecord): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of Object.values(r.files)) {
    if (isSparse(f)) for (const c of f.sparse.chunks) out.set(c.sha256, c.length);
    else out.set(f.sha256, f.size);
  }
  const visit = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.$blob === 'string' && typeof o.size === 'number') out.set(o.$blob, o.size);
      else Object.values(o).forEach(visit);
    }
  };
  visit(r.values);
  return out;
}

let tmpCounter = 0;
const tmpName = (dir: string, what: string) => join(dir, `.ossify-tmp-${process.pid}-${tmpCounter++}-${what.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40)}`);

const shared = new Map<string, StageCache>();

export class StageCache {
  readonly root: string;
  readonly blobs: BlobCache;
  /**
   * Blobs re-hashed here, with the stat they had then (`verified.json`, kept across runs): a
   * later use re-hashes a blob only when its inode, size or mtime changed since, so an
   * unchanged rebuild reads no blob, while any write to one (which moves its mtime) is caught.
   */
  private verifiedLoaded?: Map<string, string>;
  private verifiedDirty = false;
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Warnings for the build's log (corrupt records dropped). */
  readonly warnings: string[] = [];

  private constructor(root: string) {
    this.root = root;
    this.blobs = new BlobCache(this.root);
  }

  /** The stage cache of a cache directory (`<cacheDir>/stages`). */
  static open(cacheDir: string): StageCache {
    return StageCache.at(join(cacheDir, 'stages'));
  }

  /** The stage cache rooted at `root`; one instance per directory and process, so concurrent builds share its locks. */
  static at(root: string): StageCache {
    const dir = resolve(root);
    let c = shared.get(dir);
    if (!c) {
      c = new StageCache(dir);
      shared.set(dir, c);
    }
    return c;
  }

  recordPath(key: string): string {
    if (!/^[0-9a-f]{64}$/.test(key)) throw new OssifyError(`not a stage key: ${key}`);
    return join(this.root, 'records', key.slice(0, 2), `${key}.json`);
  }

  blobPath(sha256: string): string {
    return this.blobs.blobPath(sha256);
  }

  /**
   * Runs `fn` with the key held: two builds in this process that need the same stage wait
   * for one another, and the second finds the first one's record instead of redoing it.
   */
  async withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    for (;;) {
      const held = this.locks.get(key);
      if (!held) break;
      await held.catch(() => {});
    }
    const p = fn();
    this.locks.set(key, p);
    try {
      return await p;
    } finally {
      if (this.locks.get(key) === p) this.locks.delete(key);
    }
  }

  /** The record under `key` with all its blobs verified, or undefined (absent or dropped as corrupt). */
  async get(key: string): Promise<StageRecord | undefined> {
    const path = this.recordPath(key);
    let rec: StageRecord;
    try {
      rec = JSON.parse(await readFile(path, 'utf8')) as StageRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      return this.drop(path, `unreadable record: ${(err as Error).message}`);
    }
    if (rec.format !== CACHE_FORMAT || rec.key !== key || typeof rec.files !== 'object') return this.drop(path, 'record of another format');
    for (const [sha, size] of recordBlobs(rec)) {
      const why = await this.verifyBlob(sha, size);
      if (why) return this.drop(path, why);
    }
    const now = new Date();
    await utimes(path, now, now).catch(() => {});
    return rec;
  }

  /** True when the record exists (not verified). */
  async has(key: string): Promise<boolean> {
    return (await stat(this.recordPath(key)).catch(() => undefined)) !== undefined;
  }

  private async drop(path: string, why: string): Promise<undefined> {
    this.warnings.push(`stage cache: dropped ${path}: ${why}; the stage runs again`);
    await rm(path, { force: true });
    return undefined;
  }

  /** Why a blob cannot be used (absent, wrong size, wrong digest), or undefined when it verifies. */
  async verifyBlob(sha256: string, size: number): Promise<string | undefined> {
    const path = this.blobPath(sha256);
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile()) return `blob ${sha256} is missing`;
    if (st.size !== size) {
      await rm(path, { force: true });
      return `blob ${sha256} is ${st.size} bytes, the record says ${size}`;
    }
    // Not ctime: hard-linking a blob into a build directory moves it without touching the bytes.
    const sig = `${st.size}:${st.mtimeMs}:${st.ino}`;
    if (this.verified().get(sha256) === sig) return undefined;
    const h = createHash('sha256');
    for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
    const actual = h.digest('hex');
    if (actual !== sha256) {
      // Gone, so the stage's next run stores good bytes under this name again.
      await rm(path, { force: true });
      return `blob ${sha256} is corrupt (its bytes hash to ${actual})`;
    }
    this.verified().set(sha256, sig);
    this.verifiedDirty = true;
    return undefined;
  }

  private verifiedPath(): string {
    return join(this.root, 'verified.json');
  }

  private verified(): Map<string, string> {
    if (this.verifiedLoaded) return this.verifiedLoaded;
    let known: Record<string, string> = {};
    try {
      known = JSON.parse(readFileSync(this.verifiedPath(), 'utf8')) as Record<string, string>;
    } catch {
      /* none yet, or unreadable: blobs are simply re-hashed */
    }
    this.verifiedLoaded = new Map(Object.entries(known).filter(([k, v]) => /^[0-9a-f]{64}$/.test(k) && typeof v === 'string'));
    // Saved when the process ends: a killed build only loses the memo, never a check.
    process.once('exit', () => this.saveVerified());
    return this.verifiedLoaded;
  }

  private saveVerified(): void {
    if (!this.verifiedDirty || !this.verifiedLoaded) return;
    try {
      const tmp = tmpName(this.root, 'verified');
      mkdirSync(this.root, { recursive: true });
      writeFileSync(tmp, JSON.stringify(Object.fromEntries(this.verifiedLoaded)));
      renameSync(tmp, this.verifiedPath());
      this.verifiedDirty = false;
    } catch {
      /* a memo only */
    }
  }

  async put(rec: StageRecord): Promise<void> {
    const path = this.recordPath(rec.key);
    await mkdir(dirname(path), { recursive: true });
    const tmp = tmpName(dirname(path), 'record');
    await writeFile(tmp, `${JSON.stringify(rec)}\n`);
    await rename(tmp, path);
  }

  private async blobDir(): Promise<string> {
    const dir = join(this.root, 'blobs', 'sha256');
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Stores bytes as a blob; returns their digest. */
  async putBytes(bytes: Uint8Array): Promise<FileOutput> {
    const sha256 = sha256Hex(bytes);
    const dest = this.blobPath(sha256);
    if (!(await this.present(sha256, bytes.length))) {
      const tmp = tmpName(await this.blobDir(), sha256);
      await writeFile(tmp, bytes);
      await rename(tmp, dest);
    }
    return { sha256, size: bytes.length };
  }

  /** Copies a file into the store (a reflink where the filesystem has them); returns its digest. */
  async putFile(path: string): Promise<FileOutput> {
    const h = createHash('sha256');
    let size = 0;
    for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) {
      h.update(c as Buffer);
      size += (c as Buffer).length;
    }
    const sha256 = h.digest('hex');
    if (!(await this.present(sha256, size))) {
      const tmp = tmpName(await this.blobDir(), sha256);
      await copyFile(path, tmp, constants.COPYFILE_FICLONE);
      // What was copied must be what was hashed: the build directory is not ours alone.
      if ((await stat(tmp)).size !== size) throw new OssifyError(`${path} changed while it was stored in the stage cache`);
      await rename(tmp, this.blobPath(sha256));
    }
    return { sha256, size };
  }

  /** A sparse file kept as its non-zero chunks, each a blob (chunks other images share are stored once). */
  async putSparse(path: string, opts: Omit<ScanOptions, 'onChunk'> = {}): Promise<{ out: SparseOutput; checkpoint?: Hash }> {
    const scan = await scanSparse(path, { ...opts, onChunk: (data) => this.putBytes(data).then(() => {}) });
    return { out: { sparse: scan.image }, ...(scan.checkpoint ? { checkpoint: scan.checkpoint } : {}) };
  }

  /** A blob that exists with the right size counts as stored (it was hashed when written and is re-hashed before use). */
  async present(sha256: string, size: number): Promise<boolean> {
    const st = await stat(this.blobPath(sha256)).catch(() => undefined);
    return st !== undefined && st.isFile() && st.size === size;
  }

  /** Copies a verified blob to `dest` (never a hard link: outputs are the user's to modify). */
  async copyOut(sha256: string, dest: string): Promise<void> {
    await mkdir(dirname(dest), { recursive: true });
    await copyFile(this.blobPath(sha256), dest, constants.COPYFILE_FICLONE);
  }

  /**
   * Hard-links a verified blob to `dest` (copies across filesystems). Only for files that are
   * content-addressed where they land too (OCI layout blobs), which nothing writes in place.
   */
  async linkOut(sha256: string, dest: string): Promise<void> {
    await mkdir(dirname(dest), { recursive: true });
    await rm(dest, { force: true });
    try {
      await link(this.blobPath(sha256), dest);
    } catch {
      await copyFile(this.blobPath(sha256), dest, constants.COPYFILE_FICLONE);
    }
  }

  /** Writes a sparse image from its chunks: holes stay holes. */
  async writeSparseOut(out: SparseOutput, dest: string): Promise<void> {
    await writeSparse(dest, out.sparse, (c) => this.blobPath(c.sha256));
  }

  /** Every record, with the file's mtime (last used). */
  async list(): Promise<{ record: StageRecord; path: string; lastUsed: Date; bytes: number }[]> {
    const out: { record: StageRecord; path: string; lastUsed: Date; bytes: number }[] = [];
    const top = join(this.root, 'records');
    for (const sub of await readdir(top).catch(() => [] as string[])) {
      for (const name of await readdir(join(top, sub)).catch(() => [] as string[])) {
        if (!name.endsWith('.json')) continue;
        const path = join(top, sub, name);
        try {
          const record = JSON.parse(await readFile(path, 'utf8')) as StageRecord;
          const st = await stat(path);
          let bytes = 0;
          for (const size of recordBlobs(record).values()) bytes += size;
          out.push({ record, path, lastUsed: st.mtime, bytes });
        } catch {
          /* a record being written, or foreign: prune's GC skips it too */
        }
      }
    }
    return out;
  }

  /** Deletes blobs no record names (and stale temporary files); returns bytes freed. */
  async gc(): Promise<{ blobs: number; bytes: number }> {
    const keep = new Set<string>();
    for (const { record } of await this.list()) for (const sha of recordBlobs(record).keys()) keep.add(sha);
    const dir = join(this.root, 'blobs', 'sha256');
    let blobs = 0;
    let bytes = 0;
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const isBlob = /^[0-9a-f]{64}$/.test(name);
      if (isBlob && keep.has(name)) continue;
      if (!isBlob && !name.startsWith('.ossify-tmp-')) continue;
      const p = join(dir, name);
      const st = await stat(p).catch(() => undefined);
      // A temporary file may belong to a build running now: only old ones go.
      if (!isBlob && st && Date.now() - st.mtimeMs < 3600_000) continue;
      await rm(p, { force: true });
      blobs++;
      bytes += st?.size ?? 0;
    }
    return { blobs, bytes };
  }

  /** Total bytes of stored blobs. */
  async size(): Promise<number> {
    const dir = join(this.root, 'blobs', 'sha256');
    let n = 0;
    for (const name of await readdir(dir).catch(() => [] as string[])) n += (await stat(join(dir, name)).catch(() => undefined))?.size ?? 0;
    return n;
  }

  async readBlob(sha256: string): Promise<Uint8Array> {
    return readFile(this.blobPath(sha256));
  }
}
