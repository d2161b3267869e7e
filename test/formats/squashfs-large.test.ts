import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSquashfs } from '../../builder/formats/squashfs/index.ts';
import { SquashfsReader } from '../../builder/formats/squashfs/reader.ts';
import type { Content } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { runOk } from '../helpers/oracle.ts';
import { requireSquashfsOracles } from '../helpers/squashfs.ts';
import { pattern } from '../helpers/squashfs-trees.ts';

const MiB = 1 << 20;

/** 4 GiB of holes then real data: more than a basic inode can describe, streamed (never held). */
function hugeSparse(size: number, tail: Uint8Array): Content {
  return {
    size,
    origin: '<huge>',
    async *stream() {
      const zero = new Uint8Array(MiB);
      let left = size - tail.length;
      while (left > 0) {
        const n = Math.min(left, MiB);
        yield n === MiB ? zero : zero.subarray(0, n);
        left -= n;
      }
      yield tail;
    },
  };
}

describe('squashfs writer: files over 4 GiB', () => {
  let work: string;
  beforeAll(async () => {
    requireSquashfsOracles();
    work = await mkdtemp(join(tmpdir(), 'ossify-sqfs-large-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('writes a 4 GiB+ sparse file with an extended inode that unsquashfs extracts', async () => {
    const tail = pattern(MiB + 12345, 7);
    const size = 4 * 1024 * MiB + tail.length;
    const t = new FileTree();
    t.set('disk.img', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 5, content: hugeSparse(size, tail) });
    const img = join(work, 'large.sqfs');
    const before = process.memoryUsage().rss;
    const res = await writeSquashfs(t, img, { compression: 'zstd', blockSize: MiB, threads: 2 });
    // Streaming: the image is small and memory did not grow by anything like the file size.
    expect(res.bytes).toBeLessThan(4 * MiB);
    expect(process.memoryUsage().rss - before).toBeLessThan(512 * MiB);

    const r = await SquashfsReader.open(img);
    try {
      let found = false;
      for await (const { path, inode } of r.walk()) {
        if (path !== 'disk.img') continue;
        found = true;
        expect(inode.type).toBe(9); // extended file inode
        expect(inode.size).toBe(size);
        expect(inode.sparse).toBe(4 * 1024 * MiB);
        expect(inode.blocks!.filter((b) => b === 0).length).toBe(4096);
      }
      expect(found).toBe(true);
    } finally {
      await r.close();
    }

    expect(runOk('unsquashfs', ['-lln', img])).toMatch(new RegExp(`\\s${size} \\S+ \\S+ squashfs-root/disk.img`));
    const dest = join(work, 'x');
    runOk('unsquashfs', ['-q', '-n', '-d', dest, img]);
    const out = join(dest, 'disk.img');
    expect((await stat(out)).size).toBe(size);
    const fh = await open(out, 'r');
    try {
      const buf = Buffer.alloc(tail.length);
      await fh.read(buf, 0, tail.length, size - tail.length);
      expect(buf.equals(Buffer.from(tail))).toBe(true);
      const z = Buffer.alloc(4096, 1);
      await fh.read(z, 0, 4096, 3 * 1024 * MiB);
      expect(z.every((b) => b === 0)).toBe(true);
    } finally {
      await fh.close();
    }
  }, 300_000);
});
