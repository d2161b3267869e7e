import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dirIdentity } from '../builder/cache/identity.ts';
import { builderIdentity, CACHE_FORMAT, stageKey } from '../builder/cache/key.ts';
import { parseDuration, pruneCache, listCache } from '../builder/cache/prune.ts';
import { hashFileFrom, hashPrefix, scanSparse, writeSparse } from '../builder/cache/sparse.ts';
import { StageRun, type StageDef, type StageCtx } from '../builder/cache/stages.ts';
import { StageCache, type StageRecord } from '../builder/cache/store.ts';
import type { LoadedProfile } from '../builder/profile/load.ts';
import type { Step } from '../builder/steps.ts';
import { bytesContent, readContent, type Content } from '../builder/tree/content.ts';
import { FileTree } from '../builder/tree/tree.ts';
import { ossify } from './helpers/cli.ts';
import { requireTool, runOk } from './helpers/oracle.ts';

const root = mkdtempSync(join(tmpdir(), 'ossify-cache-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (what: string) => {
  const d = join(root, `${what}-${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
};
const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

describe('stage keys', () => {
  it('are the sha256 of canonical JSON: key order does not count, every value does', () => {
    expect(stageKey({ a: 1, b: [1, 2] })).toBe(stageKey({ b: [1, 2], a: 1 }));
    expect(stageKey({ a: 1, b: [1, 2] })).not.toBe(stageKey({ a: 1, b: [2, 1] }));
    expect(stageKey({ a: 1 })).toMatch(/^[0-9a-f]{64}$/);
  });

  it('name the builder by version and by a digest of its code', () => {
    const id = builderIdentity();
    expect(id.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(id.code).toMatch(/^[0-9a-f]{64}$/);
    expect(builderIdentity()).toEqual(id);
  });
});

describe('sparse images', () => {
  it('keep only non-zero chunks, restore byte-identical files with holes, and hash like the whole file', async () => {
    const dir = fresh('sparse');
    const file = join(dir, 'disk.raw');
    const fh = await open(file, 'w');
    await fh.truncate(24 << 20);
    await fh.write(Buffer.from('GPT header'), 0, 10, 512);
    await fh.write(Buffer.alloc(100_000, 0xab), 0, 100_000, 5 << 20);
    await fh.write(Buffer.from('backup'), 0, 6, (24 << 20) - 512);
    await fh.close();
    const stored = new Map<string, Buffer>();
    const { image, checkpoint } = await scanSparse(file, { checkpointAt: 16 << 20, onChunk: async (d, c) => void stored.set(c.sha256, d) });
    const whole = readFileSync(file);
    expect(image.sha256).toBe(sha(whole));
    expect(image.size).toBe(24 << 20);
    // 512 B at 0, 100 kB at 5 MiB (two 64 KiB chunks), the last chunk.
    expect(image.chunks.map((c) => c.offset)).toEqual([0, 5 << 20, (5 << 20) + (64 << 10), (24 << 20) - (64 << 10)]);
    expect(checkpoint!.copy().digest('hex')).toBe(sha(whole.subarray(0, 16 << 20)));

    const out = join(dir, 'restored.raw');
    await writeSparse(out, image, (c) => {
      const p = join(dir, c.sha256);
      writeFileSync(p, stored.get(c.sha256)!);
      return p;
    });
    expect(sha(readFileSync(out))).toBe(image.sha256);
    // Holes stay holes: far less allocated than the logical size.
    expect(statSync(out).blocks * 512).toBeLessThan(1 << 20);

    // The prefix state from chunks alone, finished by reading the rest of the file, equals the whole hash.
    const prefix = await hashPrefix(image, 16 << 20, (c) => join(dir, c.sha256));
    expect(await hashFileFrom(out, 16 << 20, prefix)).toBe(image.sha256);
    // A scan from a known prefix gives the same image as a full one.
    const again = await scanSparse(file, { from: { offset: 16 << 20, hash: await hashPrefix(image, 16 << 20, (c) => join(dir, c.sha256)), chunks: image.chunks } });
    expect(again.image).toEqual(image);
  });
});

function record(key: string, files: StageRecord['files'], step = 'test'): StageRecord {
  return { format: CACHE_FORMAT, key, step, output: key, files, values: {}, sources: [], made: { profile: 'p' } };
}

describe('the stage store', () => {
  it('verifies every blob before a record is used, and drops a record whose blob is corrupt', async () => {
    const cache = StageCache.at(fresh('store'));
    const src = join(cache.root, '..', 'file.bin');
    writeFileSync(src, Buffer.alloc(70_000, 7));
    const out = await cache.putFile(src);
    expect(out).toEqual({ sha256: sha(readFileSync(src)), size: 70_000 });
    const key = stageKey({ t: 1 });
    await cache.put(record(key, { 'file.bin': out }));
    expect((await cache.get(key))?.files['file.bin']).toEqual(out);

    // Corrupt the blob in place (same size): the record is dropped, not used.
    const p = cache.blobPath(out.sha256);
    const bytes = readFileSync(p);
    bytes.writeUInt8(bytes.readUInt8(123) ^ 1, 123);
    writeFileSync(p, bytes);
    // This process verified it before; the write changed its stat, so it is hashed again.
    expect(await cache.get(key)).toBeUndefined();
    expect(cache.warnings.join('\n')).toMatch(/corrupt/);
    expect(await cache.has(key)).toBe(false);
  });

  it('drops a record whose blob is missing', async () => {
    const cache = StageCache.at(fresh('store'));
    const key = stageKey({ t: 2 });
    await cache.put(record(key, { x: { sha256: sha('absent'), size: 6 } }));
    expect(await cache.get(key)).toBeUndefined();
    expect(cache.warnings.join('\n')).toMatch(/missing/);
  });

  it('runs work for one key once when two builds ask at the same time', async () => {
    const cache = StageCache.at(fresh('lock'));
    let running = 0;
    let max = 0;
    const work = () =>
      cache.withLock('k', async () => {
        max = Math.max(max, ++running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
      });
    await Promise.all([work(), work(), work(), cache.withLock('other', async () => {})]);
    expect(max).toBe(1);
  });
});

describe('dir: inputs as keys see', () => {
  it('change with a file\'s bytes, its execute bit, a symlink target; not with times or other mode bits', async () => {
    const d = fresh('dir');
    mkdirSync(join(d, 'etc'));
    writeFileSync(join(d, 'etc', 'a'), 'one');
    writeFileSync(join(d, 'run.sh'), '#!/bin/sh\n');
    symlinkSync('etc/a', join(d, 'link'));
    const id0 = await dirIdentity(d);
    utimesSync(join(d, 'etc', 'a'), new Date(0), new Date(0));
    chmodSync(join(d, 'etc', 'a'), 0o600);
    expect(await dirIdentity(d)).toBe(id0);
    chmodSync(join(d, 'run.sh'), 0o755);
    const id1 = await dirIdentity(d);
    expect(id1).not.toBe(id0);
    writeFileSync(join(d, 'etc', 'a'), 'two');
    const id2 = await dirIdentity(d);
    expect(id2).not.toBe(id1);
    rmSync(join(d, 'link'));
    symlinkSync('etc/b', join(d, 'link'));
    expect(await dirIdentity(d)).not.toBe(id2);
  });
});

// A pipeline in miniature: the wrapper against steps made up here.
interface MiniCtx extends StageCtx {
  tree?: FileTree;
  blob?: Uint8Array;
  content?: Content;
  info?: { count: number };
  signingKey?: { secret: string };
  seen?: string;
}

function miniCtx(work: string, overlayText = 'v1'): MiniCtx {
  const loaded = { file: '/x.yaml', profile: { name: 'mini', version: '1', arch: 'x86_64', overlayText } as unknown as LoadedProfile['profile'], digest: 'sha256:0', epoch: 0, chain: [] } as LoadedProfile;
  return { loaded, work, cacheDir: join(work, '..', 'inputs'), sources: [] };
}

const MINI: Record<string, StageDef> = {
  make: { version: 1, deps: [], slice: ['overlayText'] },
  use: { version: 1, deps: ['make'], slice: [] },
};

function miniSteps(calls: string[]): Step<MiniCtx>[] {
  return [
    {
      name: 'make',
      async run(ctx) {
        calls.push('make');
        const text = (ctx.loaded.profile as unknown as { overlayText: string }).overlayText;
        ctx.tree = new FileTree();
        ctx.blob = new TextEncoder().encode(`blob ${text}`);
        ctx.content = bytesContent(new TextEncoder().encode(`content ${text}`));
        ctx.info = { count: text.length };
        ctx.signingKey = { secret: 'never cached' };
        ctx.sources.push({ kind: 'dir', name: text });
        await writeFile(join(ctx.work, 'made.txt'), text);
      },
    },
    {
      name: 'extra',
      async run(ctx) {
        calls.push('extra');
        await writeFile(join(ctx.work, 'extra.txt'), `extra of ${(await readFile(join(ctx.work, 'made.txt'))).toString()}`);
      },
    },
    {
      name: 'use',
      async run(ctx) {
        calls.push('use');
        // Reads the heavy tree (only a real run of `make` has it) and the stored values.
        ctx.seen = `${ctx.tree!.size} ${new TextDecoder().decode(ctx.blob)} ${new TextDecoder().decode(await readContent(ctx.content!))} ${ctx.info!.count}`;
        await writeFile(join(ctx.work, 'used.txt'), ctx.seen);
      },
    },
  ];
}

async function runMini(cache: StageCache | undefined, overlayText: string, calls: string[]) {
  const work = fresh('work');
  const ctx = miniCtx(work, overlayText);
  const identify = async (c: StageCtx) => ({ profile: c.loaded.profile as unknown as Record<string, unknown>, baseDigest: c.loaded.digest });
  const run = new StageRun(ctx, { ...(cache ? { cache } : {}), stages: MINI, identify });
  for (const s of run.wrap(miniSteps(calls))) await s.run(ctx, () => {});
  return { ctx, run, work };
}

describe('the stage wrapper', () => {
  it('restores files, bytes, contents and plain values on a hit; never stores secrets', async () => {
    const cache = StageCache.at(fresh('mini'));
    const calls: string[] = [];
    const a = await runMini(cache, 'v1', calls);
    expect(a.run.status).toEqual({ make: 'miss', extra: 'run', use: 'miss' });
    expect(calls).toEqual(['make', 'extra', 'use']);
    const rec = a.run.record('make')!;
    expect(JSON.stringify(rec)).not.toContain('never cached');
    expect((rec as StageRecord & { heavy: string[] }).heavy).toEqual(['signingKey', 'tree']);

    calls.length = 0;
    const b = await runMini(cache, 'v1', calls);
    // `extra` is not a known stage: it always runs. Nothing else does.
    expect(calls).toEqual(['extra']);
    expect(b.run.status).toEqual({ make: 'hit', extra: 'run', use: 'hit' });
    expect(readFileSync(join(b.work, 'used.txt'), 'utf8')).toBe(a.ctx.seen);
    expect(new TextDecoder().decode(b.ctx.blob)).toBe('blob v1');
    expect(new TextDecoder().decode(await readContent(b.ctx.content!))).toBe('content v1');
    expect(b.ctx.info).toEqual({ count: 2 });
    expect(b.ctx.tree).toBeUndefined();
    expect(b.ctx.signingKey).toBeUndefined();
    expect(b.ctx.sources).toEqual([{ kind: 'dir', name: 'v1' }]);
    expect((await b.run.digestOf('made.txt'))?.sha256).toBe(sha('v1'));
  });

  it('runs a hit stage for real when a later miss needs what it could not store', async () => {
    const cache = StageCache.at(fresh('mini'));
    await runMini(cache, 'v1', []);
    // Drop only the consumer's record: `make` hits (no tree), `use` misses and needs the tree.
    for (const { path, record: r } of await cache.list()) if (r.step === 'use') rmSync(path);
    const calls: string[] = [];
    const c = await runMini(cache, 'v1', calls);
    expect(c.run.status.make).toBe('hit');
    expect(c.run.status.use).toBe('miss');
    expect(calls).toEqual(['extra', 'use', 'make', 'use']);
    expect(c.ctx.seen).toBe('1 blob v1 content v1 2');
    // The tree it made belongs to `make`, not to `use`'s record.
    expect(Object.keys(c.run.record('use')!.values)).toEqual(['seen']);
  });

  it('keys later stages on what an unknown step wrote', async () => {
    const cache = StageCache.at(fresh('mini'));
    await runMini(cache, 'v1', []);
    const changed = await runMini(cache, 'v2', []);
    expect(changed.run.status).toEqual({ make: 'miss', extra: 'run', use: 'miss' });
    const back = await runMini(cache, 'v1', []);
    expect(back.run.status).toEqual({ make: 'hit', extra: 'run', use: 'hit' });
  });

  it('without a store runs everything', async () => {
    const calls: string[] = [];
    const r = await runMini(undefined, 'v1', calls);
    expect(calls).toEqual(['make', 'extra', 'use']);
    expect(r.run.status).toEqual({ make: 'off', extra: 'run', use: 'off' });
  });
});

describe('cache ls and prune', () => {
  async function filled() {
    const cache = StageCache.open(fresh('prune'));
    const put = async (name: string, bytes: Buffer, ageDays: number) => {
      const f = join(cache.root, '..', name);
      writeFileSync(f, bytes);
      const key = stageKey({ name });
      await cache.put(record(key, { [name]: await cache.putFile(f) }, name));
      const t = new Date(Date.now() - ageDays * 86400_000);
      utimesSync(cache.recordPath(key), t, t);
      return key;
    };
    await put('old', Buffer.alloc(50_000, 1), 30);
    await put('mid', Buffer.alloc(40_000, 2), 10);
    await put('new', Buffer.alloc(30_000, 3), 0);
    return cache;
  }

  it('lists records newest first with their sizes', async () => {
    const cache = await filled();
    const { entries, storedBytes } = await listCache(cache);
    expect(entries.map((e) => e.step)).toEqual(['new', 'mid', 'old']);
    expect(entries.map((e) => e.bytes)).toEqual([30_000, 40_000, 50_000]);
    expect(storedBytes).toBe(120_000);
  });

  it('prunes by age, then by size (least recently used first), and frees the blobs only they used', async () => {
    const cache = await filled();
    const dry = await pruneCache(cache, { olderThan: parseDuration('14d'), dryRun: true });
    expect(dry.removed.map((e) => e.step)).toEqual(['old']);
    expect((await listCache(cache)).entries).toHaveLength(3);
    const r = await pruneCache(cache, { olderThan: parseDuration('14d'), maxSize: 35_000 });
    expect(r.removed.map((e) => e.step)).toEqual(['old', 'mid']);
    expect(r.freedBytes).toBe(90_000);
    expect((await listCache(cache)).storedBytes).toBe(30_000);
    expect(() => parseDuration('soon')).toThrow(/not a duration/);
  });

  it('works from the command line', async () => {
    const cache = await filled();
    const dir = join(cache.root, '..');
    const ls = await ossify(['cache', 'ls', '--cache-dir', dir, '--json']);
    expect(ls.exitCode, ls.stderr).toBe(0);
    expect((JSON.parse(ls.stdout) as { entries: unknown[] }).entries).toHaveLength(3);
    const bad = await ossify(['cache', 'prune', '--cache-dir', dir]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/--all, --older-than or --max-size/);
    const all = await ossify(['cache', 'prune', '--all', '--cache-dir', dir]);
    expect(all.exitCode, all.stderr).toBe(0);
    expect(all.stdout).toMatch(/3 records removed/);
    const empty = await ossify(['cache', 'ls', '--cache-dir', dir]);
    expect(empty.stdout).toMatch(/0 records/);
  });
});

describe('sha256 of a sparse file', () => {
  it('agrees with sha256sum', async () => {
    requireTool('sha256sum', 'coreutils');
    const dir = fresh('sum');
    const file = join(dir, 'x.raw');
    const fh = await open(file, 'w');
    await fh.truncate(3 << 20);
    await fh.write(Buffer.from('x'), 0, 1, 1 << 20);
    await fh.close();
    const { image } = await scanSparse(file);
    expect(runOk('sha256sum', [file]).split(' ')[0]).toBe(image.sha256);
  });
});
