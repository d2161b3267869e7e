import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { OssifyError } from '../util/errors.ts';
import { sha256File } from '../util/hash.ts';

/**
 * The download cache: blobs stored by their sha256 (`blobs/sha256/<hex>`), plus small JSON
 * index records that map a name (a package version, later an image reference) to a blob.
 * A blob is re-hashed every time it is used, so a corrupted or tampered cache can never
 * slip into an image; it is refused with a hint to delete it.
 */

export class CacheCorruptError extends OssifyError {
  constructor(message: string, path: string) {
    super(message, { hint: `delete ${path} and build again to re-download it` });
    this.name = 'CacheCorruptError';
  }
}

export class BlobCache {
  constructor(readonly dir: string) {}

  blobPath(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new OssifyError(`not a sha256 digest: ${sha256}`);
    return join(this.dir, 'blobs', 'sha256', sha256);
  }

  /** A scratch directory inside the cache, so finished downloads can be renamed into place. */
  async scratchDir(label: string): Promise<string> {
    const dir = join(this.dir, 'tmp', `${process.pid}-${label.replace(/[^A-Za-z0-9._+-]/g, '_')}`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    return dir;
  }

  /** Moves a verified file into the store (the caller checked its digest). */
  async adopt(file: string, sha256: string): Promise<string> {
    const dest = this.blobPath(sha256);
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    // Same filesystem (the scratch dir is inside the cache), so this is one atomic rename.
    await rename(file, dest);
    return dest;
  }

  /**
   * Streams bytes into the store under `sha256`, hashing as they arrive; bytes that do not
   * hash to it are thrown away and refused. A blob that is already stored (and verifies) is
   * kept, and the stream is not read.
   */
  async store(sha256: string, chunks: AsyncIterable<Uint8Array>, what: string): Promise<string> {
    const have = await this.verifiedBlob(sha256);
    if (have) return have;
    const dir = join(this.dir, 'tmp');
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `${process.pid}-${sha256}`);
    const h = createHash('sha256');
    const fh = await open(tmp, 'w');
    try {
      try {
        for await (const c of chunks) {
          h.update(c);
          let done = 0;
          while (done < c.length) done += (await fh.write(c, done, c.length - done)).bytesWritten;
        }
      } finally {
        await fh.close();
      }
      const actual = h.digest('hex');
      if (actual !== sha256) throw new OssifyError(`${what}: received bytes hash to sha256:${actual}, expected sha256:${sha256}; refused`);
      return await this.adopt(tmp, sha256);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async storeBytes(sha256: string, bytes: Uint8Array, what: string): Promise<string> {
    return this.store(sha256, (async function* () {
      yield bytes;
    })(), what);
  }

  /** The blob's path after checking its bytes still hash to `sha256`; undefined when absent. */
  async verifiedBlob(sha256: string): Promise<string | undefined> {
    const path = this.blobPath(sha256);
    if (!(await stat(path).catch(() => undefined))) return undefined;
    const actual = await sha256File(path);
    if (actual !== sha256) {
      throw new CacheCorruptError(`cache blob ${path} is corrupt or was tampered with: its sha256 is ${actual}, expected ${sha256}`, path);
    }
    return path;
  }

  indexPath(kind: string, key: string): string {
    // Debian versions contain ':' (epochs); encode it the way apt names its files.
    const safe = key.replace(/%/g, '%25').replace(/:/g, '%3a').replace(/\//g, '%2f');
    return join(this.dir, kind, `${safe}.json`);
  }

  async readIndex<T extends { sha256: string }>(kind: string, key: string): Promise<T | undefined> {
    const path = this.indexPath(kind, key);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const rec = JSON.parse(text) as T;
      if (typeof rec.sha256 !== 'string') throw new Error('no sha256');
      return rec;
    } catch {
      throw new CacheCorruptError(`cache index ${path} is not a valid record`, path);
    }
  }

  async writeIndex(kind: string, key: string, record: { sha256: string }): Promise<void> {
    await writeFileAtomic(this.indexPath(kind, key), `${JSON.stringify(record, null, 2)}\n`);
  }
}
