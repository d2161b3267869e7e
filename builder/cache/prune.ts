import { rm } from 'node:fs/promises';
import { InputError } from '../util/errors.ts';
import { recordBlobs, type StageCache, type StageRecord } from './store.ts';

/** `ossify cache ls` and `ossify cache prune`: what the stage cache holds, and making it smaller. */

export interface CacheEntry {
  key: string;
  step: string;
  profile?: string;
  site?: string;
  /** Bytes of the blobs the record names (blobs shared with other records counted in each). */
  bytes: number;
  lastUsed: Date;
}

export interface CacheListing {
  entries: CacheEntry[];
  /** Bytes of all stored blobs, each once. */
  storedBytes: number;
}

export async function listCache(cache: StageCache): Promise<CacheListing> {
  const all = await cache.list();
  const entries = all
    .map(({ record, lastUsed, bytes }) => ({
      key: record.key,
      step: record.step,
      ...(record.made?.profile ? { profile: record.made.profile } : {}),
      ...(record.made?.site ? { site: record.made.site } : {}),
      bytes,
      lastUsed,
    }))
    .sort((a, b) => b.lastUsed.getTime() - a.lastUsed.getTime() || (a.key < b.key ? -1 : 1));
  return { entries, storedBytes: await cache.size() };
}

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 7 * 86400 };

/** `30m`, `12h`, `7d`, `2w` in milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhdw])$/.exec(text.trim());
  if (!m) throw new InputError(`${JSON.stringify(text)} is not a duration`, { hint: 'a number and a unit: 30m, 12h, 7d, 2w' });
  return Number(m[1]) * UNITS[m[2]!]! * 1000;
}

export interface PruneOptions {
  /** Remove everything. */
  all?: boolean;
  /** Remove records not used for this many milliseconds. */
  olderThan?: number;
  /** Then remove the least recently used records until the blobs they need take at most this many bytes. */
  maxSize?: number;
  dryRun?: boolean;
  now?: number;
}

export interface PruneResult {
  removed: CacheEntry[];
  kept: number;
  /** Blob bytes freed (0 in a dry run). */
  freedBytes: number;
  freedBlobs: number;
}

export async function pruneCache(cache: StageCache, opts: PruneOptions): Promise<PruneResult> {
  if (!opts.all && opts.olderThan === undefined && opts.maxSize === undefined) {
    throw new InputError('cache prune needs --all, --older-than or --max-size', { hint: 'e.g. ossify cache prune --older-than 14d --max-size 20GiB' });
  }
  const now = opts.now ?? Date.now();
  const all = (await cache.list()).sort((a, b) => a.lastUsed.getTime() - b.lastUsed.getTime());
  const doomed = new Set<string>();
  for (const r of all) {
    if (opts.all || (opts.olderThan !== undefined && now - r.lastUsed.getTime() > opts.olderThan)) doomed.add(r.path);
  }
  if (opts.maxSize !== undefined) {
    // Blobs are shared between records: count each once, and free it when its last record goes.
    const refs = new Map<string, { size: number; n: number }>();
    let total = 0;
    for (const r of all) {
      if (doomed.has(r.path)) continue;
      for (const [sha, size] of recordBlobs(r.record)) {
        const e = refs.get(sha);
        if (e) e.n++;
        else {
          refs.set(sha, { size, n: 1 });
          total += size;
        }
      }
    }
    for (const r of all) {
      if (total <= opts.maxSize) break;
      if (doomed.has(r.path)) continue;
      doomed.add(r.path);
      for (const sha of recordBlobs(r.record).keys()) {
        const e = refs.get(sha)!;
        if (--e.n === 0) total -= e.size;
      }
    }
  }
  const entry = (r: { record: StageRecord; lastUsed: Date; bytes: number }): CacheEntry => ({
    key: r.record.key,
    step: r.record.step,
    ...(r.record.made?.profile ? { profile: r.record.made.profile } : {}),
    ...(r.record.made?.site ? { site: r.record.made.site } : {}),
    bytes: r.bytes,
    lastUsed: r.lastUsed,
  });
  const removed = all.filter((r) => doomed.has(r.path)).map(entry);
  if (opts.dryRun) return { removed, kept: all.length - removed.length, freedBytes: 0, freedBlobs: 0 };
  if (opts.all) {
    const bytes = await cache.size();
    await rm(cache.root, { recursive: true, force: true });
    return { removed, kept: 0, freedBytes: bytes, freedBlobs: -1 };
  }
  for (const path of doomed) await rm(path, { force: true });
  const freed = await cache.gc();
  return { removed, kept: all.length - removed.length, freedBytes: freed.bytes, freedBlobs: freed.blobs };
}
