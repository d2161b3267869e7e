import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { inputKind, type ResolutionContext } from '../inputs/index.ts';
import { profileInputs } from '../lock/sources.ts';
import type { LoadedProfile } from '../profile/load.ts';
import { mapLocalPaths } from '../profile/paths.ts';
import type { Input, Profile } from '../profile/schema.ts';
import { compareBytes } from '../tree/tree.ts';
import { canonicalJson, sha256Hex } from '../util/hash.ts';

/**
 * What a stage key says about the profile: the resolved profile with every local path
 * replaced by a digest of what is there (a file's bytes and execute bit, a directory's whole
 * tree), and every fetched input annotated with what it resolves to (the packages' pinned
 * versions and sha256s, an image's manifest digest). Keys built from it are the same on every
 * machine and checkout, and change exactly when a byte the build reads changes.
 *
 * Nothing here downloads or unpacks an input: a warm rebuild must not touch them at all.
 */

export interface IdentifiedProfile {
  /** The profile as JSON, local paths as `local:<sha256>`, inputs with a `resolved` digest. */
  profile: Record<string, unknown>;
  /** Digest of the profile without `site` (what the shared OS artifacts of a fleet are named by). */
  baseDigest: string;
}

/** sha256 of a file's bytes, streamed. */
async function fileSha(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest('hex');
}

/** Contents hashed by this process, by path, valid while the file's stat stays the same. */
const memo = new Map<string, { sig: string; sha256: string }>();

async function memoSha(path: string, st: Stats): Promise<string> {
  const sig = `${st.size}:${st.mtimeMs}:${st.ctimeMs}:${st.ino}`;
  const m = memo.get(path);
  if (m?.sig === sig) return m.sha256;
  const sha256 = await fileSha(path);
  memo.set(path, { sig, sha256 });
  return sha256;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });

/**
 * A directory as `dir:` reads it (builder/inputs/dir.ts): names in byte order, type, for files
 * the execute bit and the bytes, symlink targets, device numbers, hard links by the first path
 * of their inode; sockets skipped. Ownership, times and other mode bits are not read by the
 * input, so they do not count here either.
 */
export async function dirIdentity(root: string): Promise<string> {
  const h = createHash('sha256');
  const inodes = new Map<string, string>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    const names = (await readdir(dir, { encoding: 'buffer' })).map((b) => utf8.decode(b)).sort(compareBytes);
    const stats = await Promise.all(names.map((n) => lstat(join(dir, n))));
    const subdirs: [string, string][] = [];
    for (let i = 0; i < names.length; i++) {
      const st = stats[i]!;
      const p = join(dir, names[i]!);
      const r = rel ? `${rel}/${names[i]}` : names[i]!;
      if (st.isSocket()) continue;
      if (!st.isDirectory() && st.nlink > 1) {
        const ino = `${st.dev}:${st.ino}`;
        const first = inodes.get(ino);
        if (first !== undefined) {
          h.update(`${r}\0link\0${first}\n`);
          continue;
        }
        inodes.set(ino, r);
      }
      if (st.isDirectory()) {
        h.update(`${r}\0dir\n`);
        subdirs.push([p, r]);
      } else if (st.isFile()) h.update(`${r}\0file\0${st.mode & 0o100 ? 'x' : '-'}\0${st.size}\0${await memoSha(p, st)}\n`);
      else if (st.isSymbolicLink()) h.update(`${r}\0symlink\0${await readlink(p)}\n`);
      else if (st.isCharacterDevice() || st.isBlockDevice()) h.update(`${r}\0dev\0${st.isCharacterDevice() ? 'c' : 'b'}\0${st.rdev}\0${st.mode & 0o777}\n`);
      else if (st.isFIFO()) h.update(`${r}\0fifo\0${st.mode & 0o777}\n`);
    }
    for (const [p, r] of subdirs) await walk(p, r);
  };
  await walk(root, '');
  return h.digest('hex');
}

/** A local path's content identity: a directory's tree, a file's bytes and execute bit. */
export async function localIdentity(path: string): Promise<string> {
  try {
    const st = await stat(path);
    if (st.isDirectory()) return `dir:${await dirIdentity(path)}`;
    if (st.isFile()) return `file:${st.mode & 0o100 ? 'x' : '-'}:${await memoSha(path, st)}`;
    return `other:${st.mode}`;
  } catch (err) {
    // The stage that reads it will fail with the input's own message; the key only has to differ.
    return `unreadable:${(err as NodeJS.ErrnoException).code ?? 'error'}`;
  }
}

/** The lock, the caches and the profile's architecture: what resolving a fetched input needs. */
export type IdentifyOptions = ResolutionContext;

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** See IdentifiedProfile. Errors resolving an input become part of its identity; the stage that loads it reports them. */
export async function identifyProfile(loaded: LoadedProfile, opts: IdentifyOptions): Promise<IdentifiedProfile> {
  const paths = new Set<string>();
  mapLocalPaths(loaded.profile, (v) => {
    paths.add(v);
    return v;
  });
  const ids = new Map<string, string>();
  await Promise.all([...paths].map(async (p) => ids.set(p, await localIdentity(p))));
  const identified = clone(mapLocalPaths(loaded.profile, (v) => `local:${ids.get(v)}`)) as Profile;
  const originals = profileInputs(loaded.profile);
  const copies = profileInputs(identified);
  await Promise.all(
    originals.map(async ({ input }, i) => {
      const copy = copies[i]!.input as Input & { resolved?: unknown };
      try {
        const kind = inputKind(input);
        if (kind.resolution) copy.resolved = await kind.resolution(input, copy, opts);
      } catch (err) {
        copy.resolved = { error: err instanceof Error ? err.message : String(err) };
      }
    }),
  );
  return { profile: identified as unknown as Record<string, unknown>, baseDigest: loaded.baseDigest ?? loaded.digest };
}
