import { createHash } from 'node:crypto';
import { open, readdir, readFile, rename, rm, stat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { OssifyError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { canonicalJson } from '../util/hash.ts';
import { type Descriptor, type ImageIndex, type ImageManifest, MT, isIndexMediaType } from './media-types.ts';
import { assertDigest } from './reference.ts';

/**
 * An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
 * Blobs are content-addressed and written under a temporary name first, so a blob file
 * that exists is always complete; `index.json` is written last and is the commit point:
 * a layout whose index.json names a manifest has every blob that manifest needs.
 */

export function blobPath(layoutDir: string, digest: string): string {
  assertDigest(digest);
  const [alg, hex] = digest.split(':') as [string, string];
  return join(layoutDir, 'blobs', alg, hex);
}

export async function initLayout(layoutDir: string): Promise<void> {
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  await writeFileAtomic(join(layoutDir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
}

let tmpCounter = 0;

/** Streams bytes into the layout, hashing as they go; returns the blob's digest and size. */
export async function putBlobStream(layoutDir: string, chunks: AsyncIterable<Uint8Array>): Promise<{ digest: string; size: number }> {
  const dir = join(layoutDir, 'blobs', 'sha256');
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.ossify-tmp-${process.pid}-${tmpCounter++}`);
  const h = createHash('sha256');
  let size = 0;
  const fh = await open(tmp, 'w');
  try {
    for await (const c of chunks) {
      h.update(c);
      size += c.length;
      let done = 0;
      while (done < c.length) done += (await fh.write(c, done, c.length - done)).bytesWritten;
    }
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  const digest = `sha256:${h.digest('hex')}`;
  await rename(tmp, blobPath(layoutDir, digest));
  return { digest, size };
}

export async function putBlobBytes(layoutDir: string, bytes: Uint8Array): Promise<{ digest: string; size: number }> {
  return putBlobStream(
    layoutDir,
    (async function* () {
      yield bytes;
    })(),
  );
}

/** JSON documents (manifests, configs, indexes) are stored as canonical JSON so their digests are stable. */
export function encodeJson(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value));
}

export async function putJson(layoutDir: string, mediaType: string, value: unknown, extra: Partial<Descriptor> = {}): Promise<{ descriptor: Descriptor; bytes: Uint8Array }> {
  const bytes = encodeJson(value);
  const { digest, size } = await putBlobBytes(layoutDir, bytes);
  return { descriptor: { mediaType, digest, size, ...extra }, bytes };
}

/** True when the blob exists with the descriptor's size (its bytes were hashed when written). */
export async function hasBlob(layoutDir: string, desc: Pick<Descriptor, 'digest' | 'size'>): Promise<boolean> {
  const st = await stat(blobPath(layoutDir, desc.digest)).catch(() => undefined);
  return st !== undefined && st.isFile() && st.size === desc.size;
}

/** Reads a small blob and checks its digest: JSON documents are trusted only after that. */
export async function readBlob(layoutDir: string, desc: Pick<Descriptor, 'digest' | 'size'>, maxSize = 4 << 20): Promise<Uint8Array> {
  if (desc.size > maxSize) throw new OssifyError(`blob ${desc.digest} is ${desc.size} bytes, more than the ${maxSize} expected here`);
  const p = blobPath(layoutDir, desc.digest);
  const bytes = await readFile(p).catch((err: unknown) => {
    throw new OssifyError(`OCI layout ${layoutDir} lacks blob ${desc.digest}`, { cause: err });
  });
  const [alg, hex] = desc.digest.split(':') as [string, string];
  if (bytes.length !== desc.size || createHash(alg).update(bytes).digest('hex') !== hex) {
    throw new OssifyError(`OCI layout blob ${p} does not match its digest or size: the layout is corrupt`, { hint: 'delete the oci/ directory and build the image again' });
  }
  return bytes;
}

export async function writeIndex(layoutDir: string, index: ImageIndex): Promise<Descriptor> {
  const bytes = encodeJson(index);
  await writeFileAtomic(join(layoutDir, 'index.json'), bytes);
  return { mediaType: MT.index, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`, size: bytes.length };
}

export async function readIndex(layoutDir: string): Promise<ImageIndex> {
  let text: string;
  try {
    text = await readFile(join(layoutDir, 'index.json'), 'utf8');
  } catch (err) {
    throw new OssifyError(`${layoutDir} is not an OCI image layout: no index.json`, { cause: err });
  }
  const idx = JSON.parse(text) as ImageIndex;
  if (idx.schemaVersion !== 2 || !Array.isArray(idx.manifests)) throw new OssifyError(`${layoutDir}/index.json is not an OCI image index`);
  return idx;
}

export async function readManifest(layoutDir: string, desc: Descriptor): Promise<ImageManifest> {
  const m = JSON.parse(new TextDecoder().decode(await readBlob(layoutDir, desc))) as ImageManifest;
  if (m.schemaVersion !== 2 || !m.config || !Array.isArray(m.layers)) throw new OssifyError(`blob ${desc.digest} is not an image manifest`);
  return m;
}

/** Every blob digest reachable from index.json (nested indexes included). */
export async function reachableBlobs(layoutDir: string): Promise<Set<string>> {
  const seen = new Set<string>();
  const visit = async (d: Descriptor): Promise<void> => {
    if (seen.has(d.digest)) return;
    seen.add(d.digest);
    if (isIndexMediaType(d.mediaType)) {
      const idx = JSON.parse(new TextDecoder().decode(await readBlob(layoutDir, d))) as ImageIndex;
      for (const m of idx.manifests) await visit(m);
    } else if (d.mediaType === MT.manifest || d.mediaType === MT.dockerManifest) {
      const m = await readManifest(layoutDir, d);
      seen.add(m.config.digest);
      for (const l of m.layers) seen.add(l.digest);
    }
  };
  for (const m of (await readIndex(layoutDir)).manifests) await visit(m);
  return seen;
}

/** Removes blobs no longer named by index.json (left by an earlier build of the same output). */
export async function gcLayout(layoutDir: string): Promise<string[]> {
  const keep = await reachableBlobs(layoutDir);
  const dir = join(layoutDir, 'blobs', 'sha256');
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const isBlob = /^[a-f0-9]{64}$/.test(name);
    const isOurTemp = name.startsWith(`.ossify-tmp-${process.pid}-`);
    if ((isBlob && !keep.has(`sha256:${name}`)) || isOurTemp) {
      await rm(join(dir, name), { force: true });
      removed.push(name);
    }
  }
  return removed;
}
