import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { epochFromFat, fatGeometry, fatTime, readFat, writeFat32, type Fat32Options, type FatByteReader } from '../../builder/formats/fat/index.ts';
import { planPartitions, writeGpt } from '../../builder/formats/gpt.ts';
import { bytesContent, readContent, textContent, type Content } from '../../builder/tree/content.ts';
import { FileTree, type Meta } from '../../builder/tree/tree.ts';
import { derivedGuid } from '../../builder/util/guid.ts';
import { bufferSink, fileHandleSink, type BlockSink } from '../../builder/util/sink.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

const MiB = 1 << 20;
const T0 = 1_700_000_001; // 2023-11-14 22:13:21 UTC: an odd second on purpose
const F: Meta = { mode: 0o644, uid: 0, gid: 0, mtime: T0 };
const D: Meta = { mode: 0o755, uid: 0, gid: 0, mtime: T0 };
/** mtools prints non-ASCII names only in a UTF-8 locale. */
const UTF8 = { env: { LC_ALL: 'C.UTF-8' } };

function needFatOracles(): void {
  needTool('fsck.fat', 'dosfstools');
  needTool('mdir', 'mtools');
  needTool('mcopy', 'mtools');
  needTool('mtype', 'mtools');
}

/** Deterministic pseudo-random bytes, streamed in 1 MiB chunks and never held whole. */
function noiseContent(size: number, seed: number): Content {
  return {
    size,
    origin: `noise:${seed}`,
    async *stream() {
      let x = seed | 1;
      for (let done = 0; done < size; ) {
        const n = Math.min(MiB, size - done);
        const b = new Uint8Array(n);
        const w = new Uint32Array(b.buffer, 0, n >> 2);
        for (let i = 0; i < w.length; i++) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          w[i] = x >>> 0;
        }
        yield b;
        done += n;
      }
    },
  };
}

function espTree(): FileTree {
  const t = new FileTree(D);
  for (const d of ['EFI', 'EFI/BOOT', 'loader', 'loader/entries', 'ossify', 'ossify/a']) t.ensureDir(d, D);
  t.set('EFI/BOOT/BOOTX64.EFI', { type: 'file', ...F, content: noiseContent(130_000, 1) });
  t.set('loader/loader.conf', { type: 'file', ...F, content: textContent('timeout 3\ndefault ossify-*\n') });
  t.set('loader/entries/ossify-a.conf', { type: 'file', ...F, content: textContent('title ossify A\nlinux /ossify/a/vmlinuz\n') });
  t.set('loader/entries/ossify-b+3.conf', { type: 'file', ...F, content: textContent('title ossify B\nlinux /ossify/b/vmlinuz\n') });
  t.set('ossify/a/vmlinuz', { type: 'file', ...F, content: noiseContent(700_001, 2) });
  t.set('ossify/a/initrd.img', { type: 'file', ...F, content: noiseContent(1_500_003, 3) });
  return t;
}

const OPTS: Fat32Options = { size: 64 * MiB, label: 'ESP', serial: 0x0551_f7e5 };

async function imageFile(t: FileTree, opts: Fat32Options, dir: string, name = 'esp.img'): Promise<string> {
  const f = join(dir, name);
  const fh = await open(f, 'w+');
  try {
    await fh.truncate(opts.size);
    await writeFat32(t, opts, fileHandleSink(fh));
  } finally {
    await fh.close();
  }
  return f;
}

function fileReader(bytes: Uint8Array): FatByteReader {
  return async (o, n) => bytes.subarray(o, o + n);
}

/** fsck.fat -n: exit 0 and nothing but its banner and the summary line. */
function expectFsckClean(img: string): void {
  const r = run('fsck.fat', ['-n', img]);
  const lines = (r.stdout + r.stderr).split('\n').filter(Boolean);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  expect(lines.filter((l) => !/^fsck\.fat \d/.test(l) && !/: \d+ files, \d+\/\d+ clusters$/.test(l)), r.stdout).toEqual([]);
  expect(r.stdout + r.stderr).not.toMatch(/corrected|differ|Warning|invalid|free cluster summary/i);
}

/** Every path `mdir -/ -b` prints, dirs without their trailing slash. */
function mtoolsPaths(img: string): string[] {
  const r = run('mdir', ['-/', '-b', '-i', img, '::'], UTF8);
  // mdir fails on an empty, unlabelled root (an mkfs.vfat image does the same).
  if (r.code === 1 && r.stdout === '' && r.stderr.includes('File "::" not found')) return [];
  expect(r.code, r.stderr).toBe(0);
  return r.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => l.replace(/^::\//, '').replace(/\/$/, ''))
    .sort();
}

const treePaths = (t: FileTree) => t.paths().filter((p) => p !== '').sort();

/** Characters outside the BMP: stored correctly as surrogate pairs, but mtools shows each half as `_`. */
const ASTRAL = /[\u{10000}-\u{10FFFF}]/gu;

/** What mdir prints for the tree's paths. */
const mtoolsView = (t: FileTree) => treePaths(t).map((p) => p.replace(ASTRAL, '__')).sort();

async function expectSameBytes(t: FileTree, img: string, dir: string): Promise<void> {
  for (const [p, e] of t.walk()) {
    if (e.type !== 'file' || ASTRAL.test(p)) continue;
    const want = createHash('sha256').update(await readContent(e.content)).digest('hex');
    const out = join(dir, 'out.bin');
    // mtools globs source names: escape its wildcard characters.
    const r = run('mcopy', ['-n', '-o', '-i', img, `::/${p.replace(/[[\]*?\\]/g, '\\$&')}`, out], UTF8);
    expect(r.code, r.stderr).toBe(0);
    expect(createHash('sha256').update(readFileSync(out)).digest('hex'), p).toBe(want);
  }
}

describe('FAT32 geometry', () => {
  it('chooses cluster sizes and FAT sizes like mkfs.fat', () => {
    // mkfs.fat -F 32 on 64 MiB: 512-byte clusters, 1009-sector FATs, 129022 clusters.
    expect(fatGeometry(64 * MiB)).toMatchObject({ clusterSize: 512, reservedSectors: 32, fatSectors: 1009, clusterCount: 129022 });
    expect(fatGeometry(256 * MiB).clusterSize).toBe(512);
    expect(fatGeometry(512 * MiB).clusterSize).toBe(4096);
    expect(fatGeometry(512 * MiB).dataStartSector % 8).toBe(0);
  });

  it('refuses a volume too small for FAT32, saying how big it must be', () => {
    expect(() => fatGeometry(32 * MiB)).toThrow(/FAT32 needs at least 65525/);
    expect(() => fatGeometry(32 * MiB + 100)).toThrow(/multiple of 512/);
  });
});

describe('FAT timestamps', () => {
  it('renders epoch seconds as UTC with 2 s resolution, clamped to 1980–2107', () => {
    const t = fatTime(T0);
    expect(epochFromFat(t.date, t.time)).toBe(T0 - 1);
    expect(epochFromFat(t.date, t.time, t.tenths)).toBe(T0);
    expect(fatTime(0)).toEqual(fatTime(Date.UTC(1980, 0, 1) / 1000));
    expect(epochFromFat(fatTime(2 ** 40).date, fatTime(2 ** 40).time)).toBe(Date.UTC(2107, 11, 31, 23, 59, 58) / 1000);
  });
});

describe('FAT32 writer', () => {
  it('the ESP layout passes fsck.fat, mtools lists it exactly and returns identical bytes', async () => {
    needFatOracles();
    const dir = tempDir('fat-esp');
    try {
      const t = espTree();
      const img = await imageFile(t, OPTS, dir.path);
      expectFsckClean(img);
      expect(mtoolsPaths(img)).toEqual(mtoolsView(t));
      await expectSameBytes(t, img, dir.path);
      const listing = run('mdir', ['-/', '-i', img, '::'], UTF8).stdout;
      expect(listing).toContain('Volume in drive : is ESP');
      expect(listing).toContain('Volume Serial Number is 0551-F7E5');
      // The boot-counted entry survives as a long name, the plain names with their case.
      expect(listing).toMatch(/OSSIFY~2 CON\s+\d+ 2023-11-14\s+22:13\s+ossify-b\+3\.conf\n/);
      expect(listing).toMatch(/\nvmlinuz\s+700001 2023-11-14\s+22:13 \n/);
      expect(listing).toMatch(/\nBOOTX64\s+EFI\s+130000 /);
      expect(run('mtype', ['-i', img, '::/loader/loader.conf']).stdout).toBe('timeout 3\ndefault ossify-*\n');
      // Sparse: only metadata and file data were written.
      expect(statSync(img).blocks * 512).toBeLessThan(4 * MiB);
    } finally {
      dir.cleanup();
    }
  });

  it('reads back through its own reader: names, sizes, times, label, FSInfo', async () => {
    const t = espTree();
    const buf = new Uint8Array(OPTS.size);
    const res = await writeFat32(t, OPTS, bufferSink(buf));
    const v = await readFat(fileReader(buf));
    expect(v.info).toMatchObject({ serial: OPTS.serial, bootLabel: 'ESP        ', volumeLabel: 'ESP        ', fatsMatch: true, clusterCount: res.clusters });
    expect(v.info.fsInfo).toEqual({ free: v.freeClusters(), nextFree: 2 + res.usedBytes / res.clusterSize });
    const nodes = await v.list();
    expect(nodes.map((n) => n.path).sort()).toEqual(treePaths(t));
    for (const n of nodes) {
      expect(n.mtime).toBe(T0 - 1);
      expect(n.ctime).toBe(T0);
      if (!n.isDir) expect(Buffer.from(await v.readFile(n.path)).equals(Buffer.from(await readContent((t.get(n.path) as { content: Content }).content)))).toBe(true);
    }
    const byName = Object.fromEntries(nodes.map((n) => [n.path, n]));
    expect(byName['ossify/a/vmlinuz']).toMatchObject({ shortName: 'VMLINUZ', hasLongName: false });
    expect(byName['ossify/a/initrd.img']).toMatchObject({ shortName: 'INITRD.IMG', hasLongName: false });
    expect(byName['EFI/BOOT/BOOTX64.EFI']).toMatchObject({ shortName: 'BOOTX64.EFI', hasLongName: false });
    expect(byName['loader/entries/ossify-a.conf']).toMatchObject({ shortName: 'OSSIFY~1.CON', hasLongName: true });
    expect(byName['loader/entries/ossify-b+3.conf']).toMatchObject({ shortName: 'OSSIFY~2.CON', hasLongName: true });
    expect(byName['loader/loader.conf']).toMatchObject({ shortName: 'LOADER~1.CON', hasLongName: true });
  });

  it('is deterministic: the same tree gives the same writes', async () => {
    const record = async () => {
      const log: string[] = [];
      const sink: BlockSink = { write: async (o, d) => void log.push(`${o}:${createHash('sha256').update(d).digest('hex')}`) };
      await writeFat32(espTree(), OPTS, sink);
      return log;
    };
    expect(await record()).toEqual(await record());
  });

  it('stays valid when firmware renames a boot-counted entry in place and when a full directory grows', async () => {
    needFatOracles();
    needTool('mren', 'mtools');
    const dir = tempDir('fat-ren');
    try {
      const t = espTree();
      // Fill the entries directory's single 512-byte cluster: . .. + 2 + 3 + 8 = 15 of 16 slots.
      for (let i = 0; i < 8; i++) t.set(`loader/entries/X${i}`, { type: 'file', ...F, content: textContent('') });
      const img = await imageFile(t, OPTS, dir.path);
      const entriesDir = async () => (await (await readFat(readFileSync(img))).list()).find((n) => n.path === 'loader/entries')!;
      const clustersOf = async () => (await readFat(readFileSync(img))).chain((await entriesDir()).firstCluster).length;
      expect(await clustersOf()).toBe(1);
      // systemd-boot's counting renames, then the blessing.
      for (const [from, to] of [
        ['ossify-b+3.conf', 'ossify-b+2-1.conf'],
        ['ossify-b+2-1.conf', 'ossify-b+1-2.conf'],
        ['ossify-b+1-2.conf', 'ossify-b.conf'],
      ]) {
        const r = run('mren', ['-i', img, `::/loader/entries/${from}`, to!], UTF8);
        expect(r.code, r.stderr).toBe(0);
        expectFsckClean(img);
      }
      // A new long-named entry cannot fit the remaining slots: the directory must take a new cluster.
      const src = join(dir.path, 'new.conf');
      (await import('node:fs')).writeFileSync(src, 'title ossify C\n');
      const r = run('mcopy', ['-i', img, src, '::/loader/entries/ossify-c-with-a-long-name+3.conf'], UTF8);
      expect(r.code, r.stderr).toBe(0);
      expectFsckClean(img);
      expect(await clustersOf()).toBe(2);
      const v = await readFat(readFileSync(img));
      const names = (await v.readDir('loader/entries')).map((n) => n.name);
      expect(names).toEqual(expect.arrayContaining(['ossify-a.conf', 'ossify-b.conf', 'ossify-c-with-a-long-name+3.conf']));
      expect(names).not.toContain('ossify-b+3.conf');
      expect(new TextDecoder().decode(await v.readFile('loader/entries/ossify-b.conf'))).toContain('ossify B');
    } finally {
      dir.cleanup();
    }
  });

  it('lives inside a GPT partition: mtools reads it at the partition offset', async () => {
    needFatOracles();
    needTool('sgdisk', 'gdisk');
    const dir = tempDir('fat-gpt');
    try {
      const diskSize = 100 * MiB;
      const parts = planPartitions(diskSize, [
        { name: 'ESP', typeGuid: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B', guid: derivedGuid('t', 'ESP'), size: 40 * MiB },
        { name: 'STATE', typeGuid: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', guid: derivedGuid('t', 'STATE'), size: 'rest' },
      ]);
      const esp = parts[0]!;
      const img = join(dir.path, 'disk.img');
      const fh = await open(img, 'w+');
      try {
        await fh.truncate(diskSize);
        await writeGpt({ diskSize, diskGuid: derivedGuid('t'), partitions: parts }, fileHandleSink(fh));
        const espSize = (esp.lastLba - esp.firstLba + 1) * 512;
        await writeFat32(espTree(), { ...OPTS, size: espSize, hiddenSectors: esp.firstLba }, fileHandleSink(fh, esp.firstLba * 512));
      } finally {
        await fh.close();
      }
      expect(run('sgdisk', ['-v', img]).stdout).toContain('No problems found');
      const at = `${img}@@${esp.firstLba * 512}`;
      expect(mtoolsPaths(at)).toEqual(mtoolsView(espTree()));
      expect(run('mtype', ['-i', at, '::/loader/entries/ossify-b+3.conf']).stdout).toBe('title ossify B\nlinux /ossify/b/vmlinuz\n');
    } finally {
      dir.cleanup();
    }
  });

  it('streams a 60 MB kernel+initramfs through the sink in chunks of at most 1 MiB', async () => {
    needFatOracles();
    const dir = tempDir('fat-big');
    try {
      const t = new FileTree(D);
      t.set('ossify/a/vmlinuz', { type: 'file', ...F, content: noiseContent(12 * MiB + 123, 7) });
      t.set('ossify/a/initrd.img', { type: 'file', ...F, content: noiseContent(48 * MiB + 4567, 8) });
      t.set('ossify/a/zeros', { type: 'file', ...F, content: bytesContent(new Uint8Array(3 * MiB)) });
      const opts = { ...OPTS, size: 256 * MiB };
      const img = join(dir.path, 'big.img');
      const fh = await open(img, 'w+');
      let largest = 0;
      try {
        await fh.truncate(opts.size);
        const inner = fileHandleSink(fh);
        const res = await writeFat32(t, opts, {
          write: async (o, d) => {
            largest = Math.max(largest, d.length);
            await inner.write(o, d);
          },
        });
        expect(res.clusterSize).toBe(512);
        expect(res.usedBytes).toBeGreaterThan(60 * MiB);
      } finally {
        await fh.close();
      }
      expect(largest).toBeLessThanOrEqual(MiB);
      // The all-zero file was never written: the image stays sparse there.
      expect(statSync(img).blocks * 512).toBeLessThan(64 * MiB);
      expectFsckClean(img);
      expect(mtoolsPaths(img)).toEqual(mtoolsView(t));
      await expectSameBytes(t, img, dir.path);
    } finally {
      dir.cleanup();
    }
  });

  it('with zeroed: false, writes a complete FAT over garbage and stays clean', async () => {
    needFatOracles();
    const dir = tempDir('fat-dirty');
    try {
      const img = join(dir.path, 'dirty.img');
      const fh = await open(img, 'w+');
      try {
        const junk = new Uint8Array(OPTS.size).fill(0xa5);
        await fh.write(junk, 0, junk.length, 0);
        await writeFat32(espTree(), { ...OPTS, zeroed: false }, fileHandleSink(fh));
      } finally {
        await fh.close();
      }
      expectFsckClean(img);
      expect(mtoolsPaths(img)).toEqual(mtoolsView(espTree()));
    } finally {
      dir.cleanup();
    }
  });

  it('generates Windows-style short names and keeps every long name and its case', async () => {
    needFatOracles();
    const dir = tempDir('fat-names');
    try {
      const t = new FileTree(D);
      const names = [
        'README', 'readme2.txt', 'Mixed.Txt', 'UPPER.txt', 'lower.TXT', 'a+b.c', 'x,y;z=[w]', 'with space', ' lead.space',
        '.bashrc', 'archive.tar.gz', 'verylongfilename.text', 'verylongfilename.texture', 'verylo~1.tex', 'ünïcödé',
        'ß', 'emoji 💾.bin', '1234567.123', '12345678.1234', 'NAME~1', 'e'.repeat(255), '$money&%', 'a.b.c.d', 'noext.',
      ].filter((n) => !n.endsWith('.'));
      names.forEach((n, i) => t.set(`d/${n}`, { type: 'file', ...F, content: textContent(`file ${i}`) }));
      t.set('d/sub dir/deeper/x', { type: 'file', ...F, content: textContent('x') });
      const img = await imageFile(t, OPTS, dir.path);
      expectFsckClean(img);
      expect(mtoolsPaths(img)).toEqual(mtoolsView(t));
      await expectSameBytes(t, img, dir.path);
      const v = await readFat(readFileSync(img));
      const byName = Object.fromEntries((await v.readDir('d')).map((n) => [n.name, n]));
      expect(byName['README']).toMatchObject({ shortName: 'README', hasLongName: false });
      expect(byName['readme2.txt']).toMatchObject({ shortName: 'README2.TXT', hasLongName: false });
      expect(byName['Mixed.Txt']).toMatchObject({ shortName: 'MIXED.TXT', hasLongName: true });
      expect(byName['UPPER.txt']).toMatchObject({ shortName: 'UPPER.TXT', hasLongName: false });
      expect(byName['a+b.c']).toMatchObject({ shortName: 'A_B~1.C', hasLongName: true });
      expect(byName['.bashrc']).toMatchObject({ shortName: 'BASHRC~1', hasLongName: true });
      expect(byName['archive.tar.gz']).toMatchObject({ shortName: 'ARCHIV~1.GZ' });
      // An exact 8.3 name claims its short name before any generated ~N can.
      expect(byName['verylo~1.tex']).toMatchObject({ shortName: 'VERYLO~1.TEX', hasLongName: false });
      expect(byName['verylongfilename.text']).toMatchObject({ shortName: 'VERYLO~2.TEX' });
      expect(byName['verylongfilename.texture']).toMatchObject({ shortName: 'VERYLO~3.TEX' });
      expect(byName['e'.repeat(255)]).toMatchObject({ shortName: 'EEEEEE~1' });
    } finally {
      dir.cleanup();
    }
  });

  it('handles multi-cluster directories, deep nesting and 4K clusters', async () => {
    needFatOracles();
    const dir = tempDir('fat-wide');
    try {
      const t = espTree();
      for (let i = 0; i < 600; i++) t.set(`wide/entry number ${i}.conf`, { type: 'file', ...F, content: textContent(`#${i}\n`) });
      t.set(`${Array.from({ length: 20 }, (_, i) => `level${i}`).join('/')}/leaf.txt`, { type: 'file', ...F, content: textContent('deep') });
      for (const size of [64 * MiB, 300 * MiB]) {
        const img = await imageFile(t, { ...OPTS, size }, dir.path, `w${size}.img`);
        const v = await readFat(readFileSync(img));
        expect(v.info.clusterSize).toBe(size > 260 * MiB ? 4096 : 512);
        const wide = (await v.list()).find((n) => n.path === 'wide')!;
        expect(v.chain(wide.firstCluster).length).toBeGreaterThan(1);
        expectFsckClean(img);
        expect(mtoolsPaths(img)).toEqual(mtoolsView(t));
        expect(run('mtype', ['-i', img, '::/wide/entry number 599.conf']).stdout).toBe('#599\n');
        expect(run('mtype', ['-i', img, `::/${Array.from({ length: 20 }, (_, i) => `level${i}`).join('/')}/leaf.txt`]).stdout).toBe('deep');
      }
    } finally {
      dir.cleanup();
    }
  });

  it('refuses what FAT cannot hold, naming the path', async () => {
    const sink = bufferSink(new Uint8Array(OPTS.size));
    const attempt = (mut: (t: FileTree) => void, opts: Partial<Fat32Options> = {}) => {
      const t = new FileTree(D);
      mut(t);
      return writeFat32(t, { ...OPTS, ...opts }, sink);
    };
    await expect(attempt((t) => t.set('a/link', { type: 'symlink', ...F, target: 'x' }))).rejects.toThrow(/"a\/link": FAT has no symbolic link/);
    await expect(attempt((t) => t.set('dev/null', { type: 'char', ...F, major: 1, minor: 3 }))).rejects.toThrow(/"dev\/null"/);
    await expect(
      attempt((t) => {
        t.set('a/Readme', { type: 'file', ...F, content: textContent('') });
        t.set('a/README', { type: 'file', ...F, content: textContent('') });
      }),
    ).rejects.toThrow(/"README" and "Readme" in "a" differ only in case/);
    await expect(attempt((t) => t.set('a/what?', { type: 'file', ...F, content: textContent('') }))).rejects.toThrow(/"a\/what\?".*"\?"/);
    await expect(attempt((t) => t.set('trailing.', { type: 'file', ...F, content: textContent('') }))).rejects.toThrow(/ends in a dot/);
    await expect(attempt((t) => t.set('big', { type: 'file', ...F, content: noiseContent(70 * MiB, 1) }))).rejects.toThrow(/needs \d+ clusters .* has 129022/);
    await expect(attempt(() => {}, { label: 'much too long label' })).rejects.toThrow(/volume label/);
    await expect(
      attempt((t) => t.set('liar', { type: 'file', ...F, content: { size: 10, origin: 'test', async *stream() { yield new Uint8Array(3); } } })),
    ).rejects.toThrow(/expected 10/);
  });

  it('copies hard links (FAT has no shared inodes)', async () => {
    const t = new FileTree(D);
    t.set('a', { type: 'file', ...F, content: textContent('shared') });
    t.set('b', { type: 'hardlink', target: 'a' });
    const buf = new Uint8Array(OPTS.size);
    await writeFat32(t, OPTS, bufferSink(buf));
    const v = await readFat(buf);
    const [a, b] = await v.list();
    expect(a!.firstCluster).not.toBe(b!.firstCluster);
    expect(new TextDecoder().decode(await v.readFile('b'))).toBe('shared');
  });

  it('its reader reads an image made by mkfs.vfat and mcopy', async () => {
    needTool('mkfs.vfat', 'dosfstools');
    needTool('mcopy', 'mtools');
    needTool('mmd', 'mtools');
    const dir = tempDir('fat-theirs');
    try {
      const img = join(dir.path, 'theirs.img');
      const mk = run('mkfs.vfat', ['-C', '-F', '32', '-n', 'THEIRS', '-i', 'DEADBEEF', img, String(64 * 1024)]);
      expect(mk.code, mk.stderr).toBe(0);
      const files: Record<string, Uint8Array> = {
        'EFI/BOOT/BOOTX64.EFI': new Uint8Array(70_000).fill(0xee),
        'loader/entries/ossify-b+3.conf': new TextEncoder().encode('title B\n'),
        'loader/loader.conf': new TextEncoder().encode('timeout 3\n'),
        'ossify/a/vmlinuz': new Uint8Array(1234).fill(9),
        'Mixed Case Long Name ü.txt': new TextEncoder().encode('mixed'),
      };
      for (const d of ['EFI', 'EFI/BOOT', 'loader', 'loader/entries', 'ossify', 'ossify/a']) expect(run('mmd', ['-i', img, `::/${d}`]).code).toBe(0);
      for (const [p, data] of Object.entries(files)) {
        const src = join(dir.path, 'src.bin');
        (await import('node:fs')).writeFileSync(src, data);
        const r = run('mcopy', ['-i', img, src, `::/${p}`], UTF8);
        expect(r.code, r.stderr).toBe(0);
      }
      const v = await readFat(readFileSync(img));
      expect(v.info).toMatchObject({ serial: 0xdeadbeef, bootLabel: 'THEIRS     ', fatsMatch: true });
      expect(v.info.fsInfo?.free).toBe(v.freeClusters());
      const nodes = await v.list();
      expect(nodes.filter((n) => !n.isDir).map((n) => n.path).sort()).toEqual(Object.keys(files).sort());
      for (const [p, data] of Object.entries(files)) expect(Buffer.from(await v.readFile(p)).equals(Buffer.from(data)), p).toBe(true);
    } finally {
      dir.cleanup();
    }
  });

  it('property: random trees pass fsck.fat and read back identically through mtools and the reader', async () => {
    needFatOracles();
    const dir = tempDir('fat-prop');
    try {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(arbFatTree(), async (t) => {
          const img = await imageFile(t, { ...OPTS, size: 34 * MiB, label: '' }, dir.path, `p${n++}.img`);
          expectFsckClean(img);
          expect(mtoolsPaths(img)).toEqual(mtoolsView(t));
          const bytes = readFileSync(img);
          const v = await readFat(bytes);
          expect(v.info.volumeLabel).toBeUndefined();
          const nodes = await v.list();
          expect(nodes.map((x) => x.path)).toEqual(t.paths().filter((p) => p !== ''));
          for (const x of nodes) {
            const e = t.get(x.path)!;
            if (e.type === 'file') expect(Buffer.from(await v.readFile(x.path)).equals(Buffer.from(await readContent(e.content)))).toBe(true);
          }
          (await import('node:fs')).rmSync(img);
        }),
        { numRuns: 25 },
      );
    } finally {
      dir.cleanup();
    }
  });
});

/** Trees with odd names (case, dots, spaces, '+', non-ASCII, long), sized to need several clusters. */
function arbFatTree(): fc.Arbitrary<FileTree> {
  const seg = fc.oneof(
    fc.constantFrom('a', 'B', 'Mixed', 'x.y', 'x.y.z', 'sp ace', '+3', 'ossify-b+3.conf', 'ü', 'LONGNAME.TXT', 'longname.txt2', '.dot', '💾', 'é'.repeat(40)),
    fc.string({ minLength: 1, maxLength: 20, unit: fc.constantFrom('a', 'B', '.', ' ', '~', '1', '+', 'ä', '-') }),
  );
  const path = fc.array(seg, { minLength: 1, maxLength: 3 }).map((s) => s.join('/'));
  const op = fc.record({ path, dir: fc.boolean(), size: fc.nat({ max: 3000 }), mtime: fc.integer({ min: 0, max: 2 ** 33 }) });
  return fc.array(op, { maxLength: 25 }).map((ops) => {
    const t = new FileTree(D);
    const folded = new Map<string, string>();
    for (const o of ops) {
      const segs = o.path.split('/');
      // FAT names cannot end in a dot or space, and siblings may not differ only in case.
      if (segs.some((s) => /^[. ]*$/.test(s) || /[. ]$/.test(s))) continue;
      let clash = false;
      for (let i = 1; i <= segs.length; i++) {
        const p = segs.slice(0, i).join('/');
        const k = p.toUpperCase();
        if (folded.has(k) && folded.get(k) !== p) clash = true;
      }
      if (clash) continue;
      for (let i = 1; i <= segs.length; i++) folded.set(segs.slice(0, i).join('/').toUpperCase(), segs.slice(0, i).join('/'));
      if (o.dir) t.ensureDir(o.path, { ...D, mtime: o.mtime });
      else t.set(o.path, { type: 'file', ...F, mtime: o.mtime, content: noiseContent(o.size, o.size + 1) });
    }
    return t;
  });
}
