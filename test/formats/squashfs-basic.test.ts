import { mkdtemp, readFile, readlink, rm, lstat, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSquashfs } from '../../builder/formats/squashfs/index.ts';
import { bytesContent, readContent, type Content } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { run, runOk } from '../helpers/oracle.ts';
import { gensquashfsImage, llsListing, requireSquashfsOracles } from '../helpers/squashfs.ts';

const T = 1_700_000_000;
const te = new TextEncoder();

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    // Compressible but not trivial: a small alphabet driven by an xorshift.
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = 97 + ((x >>> 0) % 7);
  }
  return b;
}

/** A small root filesystem with every basic feature the lead needs. */
export function basicTree(): FileTree {
  const t = new FileTree({ mode: 0o755, uid: 0, gid: 0, mtime: T });
  const m = { mode: 0o644, uid: 0, gid: 0, mtime: T };
  const dir = (p: string, over: Partial<typeof m> = {}) => t.set(p, { type: 'dir', ...m, mode: 0o755, ...over });
  for (const d of ['bin', 'etc', 'usr', 'usr/lib', 'home', 'home/alice', 'var', 'var/empty']) dir(d);
  dir('home/alice', { uid: 1000, gid: 1000, mode: 0o700 });
  t.set('etc/hostname', { type: 'file', ...m, content: bytesContent(te.encode('ossify\n')) });
  t.set('etc/shadow', { type: 'file', ...m, mode: 0o640, gid: 42, content: bytesContent(te.encode('root:*:19000:0:99999:7:::\n')) });
  t.set('bin/busybox', { type: 'file', ...m, mode: 0o4755, content: bytesContent(pattern(300_000, 7)) });
  t.set('bin/sh', { type: 'symlink', ...m, mode: 0o777, target: 'busybox' });
  t.set('usr/lib/libbig.so', { type: 'file', ...m, mode: 0o755, content: bytesContent(pattern(131072 * 2 + 5000, 9)) });
  t.set('usr/lib/exact', { type: 'file', ...m, content: bytesContent(pattern(131072, 11)) });
  t.set('usr/lib/empty', { type: 'file', ...m, content: bytesContent(new Uint8Array(0)) });
  t.set('home/alice/notes.txt', { type: 'file', ...m, uid: 1000, gid: 1000, mode: 0o600, content: bytesContent(te.encode('hello\n')) });
  t.set('home/alice/link', { type: 'symlink', ...m, uid: 1000, gid: 1000, mode: 0o777, target: '../../etc/hostname' });
  for (let i = 0; i < 300; i++) {
    t.set(`usr/share/doc/pkg-${String(i).padStart(3, '0')}/copyright`, { type: 'file', ...m, content: bytesContent(te.encode(`package ${i}\n`.repeat(1 + (i % 13)))) });
  }
  for (const [p, e] of t.walk()) if (e.type === 'dir' && p.startsWith('usr/share')) t.set(p, { ...e, mtime: T });
  return t;
}

describe('squashfs writer: basic images', () => {
  let work: string;
  beforeAll(async () => {
    requireSquashfsOracles();
    work = await mkdtemp(join(tmpdir(), 'ossify-sqfs-basic-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const compression of ['gzip', 'zstd'] as const) {
    it(`${compression}: unsquashfs lists and extracts exactly the tree`, async () => {
      const tree = basicTree();
      const img = join(work, `basic-${compression}.sqfs`);
      const res = await writeSquashfs(tree, img, { compression, threads: 2 });
      expect(res.inodes).toBeGreaterThan(300);
      expect(res.fragments).toBeGreaterThan(0);
      expect(runOk('unsquashfs', ['-s', img])).toContain(`Compression ${compression}`);

      // Listing: same as the reference writer's image of the same tree.
      const ref = await gensquashfsImage(tree, await mkdtemp(join(work, 'ref-')), { compressor: compression, mtime: T });
      expect(llsListing(img)).toEqual(llsListing(ref));
      const diff = run('sqfsdiff', ['-T', '-a', ref, '-b', img]);
      expect(diff.stdout + diff.stderr).toBe('');
      expect(diff.code).toBe(0);

      // Extraction: contents, modes, owners, link targets.
      const dest = join(work, `x-${compression}`);
      runOk('unsquashfs', ['-q', '-n', '-d', dest, img]);
      for (const [p, e] of tree.walk()) {
        const hp = join(dest, p);
        const st = await lstat(hp);
        if (e.type === 'hardlink') continue;
        expect({ p, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid }).toEqual({ p, mode: e.mode, uid: e.uid, gid: e.gid });
        if (e.type === 'file') expect(Buffer.compare(await readFile(hp), Buffer.from(await readContent(e.content))), p).toBe(0);
        if (e.type === 'symlink') expect(await readlink(hp)).toBe(e.target);
        if (e.type === 'dir') expect((await readdir(hp)).sort()).toEqual(tree.children(p).slice().sort());
        if (e.type !== 'symlink') expect(st.mtimeMs / 1000, p).toBe(e.mtime);
      }
      // rdsquashfs (another implementation) reads it too.
      const dest2 = join(work, `rd-${compression}`);
      runOk('rdsquashfs', ['-q', '-u', '/', '-p', dest2, img]);
      expect(await readFile(join(dest2, 'bin/busybox'))).toEqual(Buffer.from(await readContent((tree.get("bin/busybox") as { content: Content }).content)));
    });
  }

  it('is byte-identical across runs and thread counts', async () => {
    const tree = basicTree();
    const hashes = new Set<string>();
    for (const threads of [1, 2, 3]) {
      const img = join(work, `det-${threads}.sqfs`);
      await writeSquashfs(tree, img, { compression: 'zstd', threads });
      hashes.add(runOk('sha256sum', [img]).split(' ')[0]!);
    }
    expect(hashes.size).toBe(1);
  });
});
