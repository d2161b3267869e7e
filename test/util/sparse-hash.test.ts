import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { assembleDisk } from '../../builder/disk/assemble.ts';
import { abLayout } from '../../builder/disk/layout.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { bytesContent } from '../../builder/tree/content.ts';
import { recordingSink, type Extent } from '../../builder/util/extents.ts';
import { fileHandleSink } from '../../builder/util/sink.ts';
import { fileDigest, sha256Sparse } from '../../builder/util/sparse-hash.ts';

const dir = mkdtempSync(join(tmpdir(), 'ossify-sparse-hash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The oracle: coreutils' sha256sum reads every byte of the file, holes included. */
function sha256sum(path: string): string {
  const r = spawnSync('sha256sum', [path], { encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`sha256sum failed (install coreutils): ${r.error?.message ?? r.stderr}`);
  return r.stdout.split(' ')[0]!;
}

describe('sha256 of a sparse file from its written ranges', () => {
  it('equals sha256sum of a disk.raw as assembleDisk writes it', async () => {
    const esp = new FileTree();
    esp.ensureDir('EFI/BOOT');
    esp.set('EFI/BOOT/BOOTX64.EFI', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, content: bytesContent(new Uint8Array(300_000).fill(0x5a), 'efi') });
    const image = join(dir, 'root.img');
    writeFileSync(image, Uint8Array.from({ length: 1_000_003 }, (_, i) => (i * 7 + 3) & 0xff));
    const layout = abLayout({ profileDigest: `sha256:${'ab'.repeat(32)}`, arch: 'x86_64', esp: 33 << 20, root: 8 << 20, state: 4 << 20 });
    const written: Extent[] = [];
    const disk = join(dir, 'disk.raw');
    await assembleDisk(disk, { layout, written, esp: { tree: esp, label: 'ESP', serial: 0x1234 }, images: { 'ROOT-A': [{ path: image, offset: 0 }, { path: image, offset: 4 << 20 }] } });
    expect(written.length).toBeGreaterThan(1);
    expect((await fileDigest(disk, written)).sha256).toBe(sha256sum(disk));
    expect((await fileDigest(disk)).sha256).toBe(sha256sum(disk));
  });

  it('equals sha256sum for any set of writes, recorded in any order', async () => {
    const file = join(dir, 'prop.raw');
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 3 << 20 }),
        fc.array(fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), length: fc.integer({ min: 1, max: 70_000 }), byte: fc.integer({ min: 1, max: 255 }) }), { maxLength: 8 }),
        async (size, writes) => {
          const fh = await open(file, 'w+');
          const written: Extent[] = [];
          try {
            await fh.truncate(size);
            const sink = recordingSink(fileHandleSink(fh), written);
            for (const w of writes) {
              const offset = Math.min(size - 1, Math.floor(w.at * size));
              await sink.write(offset, new Uint8Array(Math.min(w.length, size - offset)).fill(w.byte));
            }
          } finally {
            await fh.close();
          }
          expect(await sha256Sparse(file, size, written.reverse())).toBe(sha256sum(file));
        },
      ),
      { numRuns: 20 },
    );
  });

  it('refuses ranges past the end of the file and a file of another size', async () => {
    const file = join(dir, 'small.raw');
    writeFileSync(file, new Uint8Array(100));
    await expect(sha256Sparse(file, 100, [{ offset: 90, length: 20 }])).rejects.toThrow(/past the file's 100 bytes/);
    await expect(sha256Sparse(file, 200, [])).rejects.toThrow(/is 100 bytes, expected 200/);
  });
});
