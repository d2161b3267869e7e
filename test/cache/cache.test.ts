import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { dirIdentity } from '../../builder/cache/identity.ts';
import { builderIdentity, CACHE_FORMAT, stageKey } from '../../builder/cache/key.ts';
import { parseDuration, pruneCache, listCache } from '../../builder/cache/prune.ts';
import { hashFileFrom, hashPrefix, scanSparse, writeSparse } from '../../builder/cache/sparse.ts';
import { dependencies, StageRun } from '../../builder/cache/stages.ts';
import { StageCache, type StageRecord } from '../../builder/cache/store.ts';
import type { LoadedProfile } from '../../builder/profile/load.ts';
import { STEPS, stepsFor } from '../../builder/steps/index.ts';
import { defineStep, type BuildCtx, type Step, type Values } from '../../builder/steps/step.ts';
import type { Input, Profile } from '../../builder/profile/schema.ts';
import { bytesContent, readContent } from '../../builder/tree/content.ts';
import { ossify } from '../helpers/cli.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

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

// A pipeline in miniature: the runner against steps declared here, over the build's real value names.
function miniCtx(work: string, version = 'v1'): BuildCtx {
  // `version` stands for what a step reads: a profile key no step declares would enter every key.
  const loaded = { file: '/x.yaml', profile: { name: 'mini', version, arch: 'x86_64' } as unknown as Profile, digest: 'sha256:0', epoch: 0, chain: [] } as LoadedProfile;
  return { loaded, work, cacheDir: join(work, '..', 'inputs') };
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

function miniSteps(calls: string[], input: string): Step[] {
  return [
    defineStep({
      name: 'make',
      version: 1,
      reads: ['version'],
      needs: [],
      makes: ['rootfs', 'initramfs', 'busybox', 'partitions', 'secureBoot'],
      heavy: ['rootfs', 'secureBoot'],
      writes: ['made.txt'],
      fetches: true,
      async run(_, env) {
        calls.push('make');
        const t = env.profile.version;
        const rootfs = await env.fetch({ dir: input, target: '/' } as Input);
        await writeFile(join(env.work, 'made.txt'), t);
        return {
          rootfs,
          initramfs: new TextEncoder().encode(`blob ${t}`),
          busybox: bytesContent(new TextEncoder().encode(`content ${t}`)),
          partitions: [{ label: t, typeGuid: 'T', guid: 'G', offset: t.length, size: 0 }],
          secureBoot: { secret: 'never cached' } as unknown as Values['secureBoot'],
        };
      },
    }),
    // Changes a value an earlier step made: later steps must see it changed, also after hits.
    defineStep({
      name: 'grow',
      version: 1,
      reads: [],
      needs: ['rootfs'],
      makes: ['rootfs'],
      heavy: ['rootfs'],
      async run({ rootfs }) {
        calls.push('grow');
        rootfs.set('grown', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, content: bytesContent(new Uint8Array(1)) });
        return { rootfs };
      },
    }),
    defineStep({
      name: 'stamp',
      version: 1,
      reads: [],
      needs: [],
      readsFiles: ['made.txt'],
      makes: [],
      writes: ['extra.txt'],
      async run(_, env) {
        calls.push('stamp');
        await writeFile(join(env.work, 'extra.txt'), `extra of ${(await readFile(join(env.work, 'made.txt'))).toString()}`);
        return {};
      },
    }),
    defineStep({
      name: 'use',
      version: 1,
      reads: [],
      needs: ['rootfs', 'initramfs', 'busybox', 'partitions'],
      makes: ['kernelVersion'],
      writes: ['used.txt'],
      async run({ rootfs, initramfs, busybox, partitions }, env) {
        calls.push('use');
        // Reads the heavy tree (only a real run of `make` and `grow` has it) and the stored values.
        const seen = `${rootfs.size} ${rootfs.get('grown') ? 'grown' : 'not grown'} ${text(initramfs)} ${text(await readContent(busybox))} ${partitions[0]!.offset}`;
        await writeFile(join(env.work, 'used.txt'), seen);
        return { kernelVersion: seen };
      },
    }),
    defineStep({
      name: 'other',
      version: 1,
      reads: [],
      needs: [],
      makes: [],
      writes: ['other.txt'],
      async run(_, env) {
        calls.push('other');
        await writeFile(join(env.work, 'other.txt'), 'the same every time');
        return {};
      },
    }),
  ];
}

const miniInput = () => {
  const d = fresh('input');
  writeFileSync(join(d, 'a'), 'a file');
  return d;
};

async function runMini(cache: StageCache | undefined, version: string, calls: string[], input: string, steps = miniSteps(calls, input)) {
  const work = fresh('work');
  const identify = async (c: BuildCtx) => ({ profile: c.loaded.profile as unknown as Record<string, unknown>, baseDigest: c.loaded.digest });
  const run = new StageRun(miniCtx(work, version), steps, { ...(cache ? { cache } : {}), identify });
  for (const t of run.tasks()) await t.run(() => {});
  return { run, work };
}

describe('the stage runner', () => {
  it('restores files, bytes, contents and plain values on a hit; never stores secrets', async () => {
    const cache = StageCache.at(fresh('mini'));
    const input = miniInput();
    const calls: string[] = [];
    const a = await runMini(cache, 'v1', calls, input);
    expect(a.run.status).toEqual({ make: 'miss', grow: 'miss', stamp: 'miss', use: 'miss', other: 'miss' });
    expect(calls).toEqual(['make', 'grow', 'stamp', 'use', 'other']);
    const rec = a.run.record('make')!;
    expect(JSON.stringify(rec)).not.toContain('never cached');
    expect((rec as StageRecord & { heavy: string[] }).heavy).toEqual(['rootfs', 'secureBoot']);

    calls.length = 0;
    const b = await runMini(cache, 'v1', calls, input);
    expect(calls).toEqual([]);
    expect(b.run.status).toEqual({ make: 'hit', grow: 'hit', stamp: 'hit', use: 'hit', other: 'hit' });
    expect(readFileSync(join(b.work, 'used.txt'), 'utf8')).toBe(a.run.value('kernelVersion'));
    expect(b.run.value('kernelVersion')).toBe(a.run.value('kernelVersion'));
    expect(text(b.run.made('initramfs'))).toBe('blob v1');
    expect(text(await readContent(b.run.made('busybox')))).toBe('content v1');
    expect(b.run.value('partitions')).toEqual([{ label: 'v1', typeGuid: 'T', guid: 'G', offset: 2, size: 0 }]);
    expect(b.run.value('rootfs')).toBeUndefined();
    expect(b.run.value('secureBoot')).toBeUndefined();
    expect(b.run.sources()).toEqual(a.run.sources());
    expect(b.run.sources()).toEqual([{ kind: 'dir', name: basename(input) }]);
    expect((await b.run.digestOf('made.txt'))?.sha256).toBe(sha('v1'));
  });

  it('makes what a later miss needs and a hit could not store, once, before the step runs, in the state the last step left it', async () => {
    const cache = StageCache.at(fresh('mini'));
    const input = miniInput();
    const first = await runMini(cache, 'v1', [], input);
    // Drop only the consumer's record: `make` and `grow` hit (no tree), `use` misses and needs the grown tree.
    for (const { path, record: r } of await cache.list()) if (r.step === 'use') rmSync(path);
    const calls: string[] = [];
    const c = await runMini(cache, 'v1', calls, input);
    expect(c.run.status).toMatchObject({ make: 'hit', grow: 'hit', use: 'miss' });
    expect(calls).toEqual(['make', 'grow', 'use']);
    expect(c.run.value('kernelVersion')).toBe(first.run.value('kernelVersion'));
    expect(c.run.value('kernelVersion')).toMatch(/ grown /);
    // What it made on demand belongs to `make` and `grow`, not to `use`'s record.
    expect(Object.keys(c.run.record('use')!.values)).toEqual(['kernelVersion']);
    expect(Object.keys(c.run.record('use')!.files)).toEqual(['used.txt']);
  });

  it('keys a step on what its declaration reads: the profile slice, and the steps that made its values and files', async () => {
    const cache = StageCache.at(fresh('mini'));
    const input = miniInput();
    await runMini(cache, 'v1', [], input);
    const changed = await runMini(cache, 'v2', [], input);
    // `stamp` reads the file `make` wrote, `use` its values; `other` reads nothing that changed.
    expect(changed.run.status).toEqual({ make: 'miss', grow: 'miss', stamp: 'miss', use: 'miss', other: 'hit' });
    const back = await runMini(cache, 'v1', [], input);
    expect(Object.values(back.run.status).every((s) => s === 'hit')).toBe(true);
  });

  it('refuses a step that writes a file its declaration does not list', async () => {
    const cache = StageCache.at(fresh('mini'));
    const calls: string[] = [];
    const steps = miniSteps(calls, miniInput()).map((s) => (s.name === 'other' ? { ...s, writes: [] } : s));
    await expect(runMini(cache, 'v1', calls, '', steps)).rejects.toThrow(/step other wrote other\.txt, which its declaration does not list in writes/);
  });

  it('refuses to store a secret a step does not declare heavy', async () => {
    const cache = StageCache.at(fresh('mini'));
    const calls: string[] = [];
    const steps = miniSteps(calls, miniInput()).map((s) => (s.name === 'make' ? { ...s, heavy: ['rootfs' as const] } : s));
    await expect(runMini(cache, 'v1', calls, '', steps)).rejects.toThrow(/make: secureBoot looks like a secret; declare it heavy/);
  });

  it('without a store runs everything', async () => {
    const calls: string[] = [];
    const r = await runMini(undefined, 'v1', calls, miniInput());
    expect(calls).toEqual(['make', 'grow', 'stamp', 'use', 'other']);
    expect(Object.values(r.run.status).every((s) => s === 'off')).toBe(true);
  });
});

describe('the build steps', () => {
  it('derive each key\'s upstream stages from what they take (as the stage table before them listed)', () => {
    const deps = Object.fromEntries(STEPS.map((s) => [s.name, dependencies(STEPS, s)]));
    expect(deps).toEqual({
      'kernel input': [],
      'boot inputs': [],
      initramfs: ['boot inputs', 'kernel input'],
      'rootfs tree': [],
      sbom: ['rootfs tree'],
      squashfs: ['sbom'],
      verity: ['squashfs'],
      kernel: ['kernel input'],
      uki: ['boot inputs', 'initramfs', 'kernel input', 'verity'],
      disk: ['boot inputs', 'initramfs', 'kernel', 'squashfs', 'uki', 'verity'],
      site: [],
      'site seed': ['disk', 'site'],
    });
  });

  it('have one name each, and apply by the profile', () => {
    expect(new Set(STEPS.map((s) => s.name)).size).toBe(STEPS.length);
    const p = (over: Record<string, unknown>) => ({ rootfs: { verity: false }, boot: { entries: 'type1' }, ...over }) as unknown as Profile;
    expect(stepsFor(p({})).map((s) => s.name)).toEqual(['kernel input', 'boot inputs', 'initramfs', 'rootfs tree', 'sbom', 'squashfs', 'kernel', 'disk']);
    expect(stepsFor(p({ rootfs: { verity: true }, boot: { entries: 'uki' }, site: { name: 's' } })).map((s) => s.name)).toEqual(STEPS.map((s) => s.name));
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
