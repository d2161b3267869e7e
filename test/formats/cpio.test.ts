import { lstatSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cpioChunks, cpioType, readCpio, writeCpio } from '../../builder/formats/cpio.ts';
import { bytesContent, readContent, textContent } from '../../builder/tree/content.ts';
import { FileTree, type Entry, type Meta } from '../../builder/tree/tree.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

const M: Meta = { mode: 0o755, uid: 0, gid: 0, mtime: 1_700_000_000 };

function sampleTree(withDevices: boolean): FileTree {
  const t = new FileTree();
  t.set('bin/busybox', { type: 'file', ...M, content: textContent('#!busybox\n'.repeat(100)) });
  t.set('bin/sh', { type: 'symlink', ...M, mode: 0o777, target: 'busybox' });
  t.set('bin/ash', { type: 'hardlink', target: 'bin/busybox' });
  t.set('sbin/switch_root', { type: 'hardlink', target: 'bin/busybox' });
  t.set('init', { type: 'file', ...M, mtime: 1_600_000_000, content: textContent('#!/bin/sh\necho hi\n') });
  t.set('etc/empty', { type: 'file', ...M, mode: 0o600, uid: 1000, gid: 100, content: textContent('') });
  t.set('etc/odd name ü', { type: 'file', ...M, mode: 0o4755, content: textContent('odd') });
  t.set('lib/modules/6.1/kernel/fs/squashfs.ko', { type: 'file', ...M, mode: 0o644, content: bytesContent(new Uint8Array(4097).fill(7)) });
  t.set('run/initctl', { type: 'fifo', ...M, mode: 0o600 });
  t.ensureDir('proc', { ...M, mode: 0o555 });
  if (withDevices) {
    t.set('dev/console', { type: 'char', ...M, mode: 0o600, major: 5, minor: 1 });
    t.set('dev/vda', { type: 'block', ...M, mode: 0o660, gid: 6, major: 254, minor: 0 });
  }
  return t;
}

const TYPE_CHAR: Record<string, string> = { file: '-', dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's' };

/** `ls -l` style mode string, as cpio -tv and bsdtar -tv print it. */
function modeString(type: string, mode: number): string {
  const r = (b: number, c: string) => (mode & b ? c : '-');
  const x = (b: number, special: number, on: string, off: string) =>
    mode & special ? (mode & b ? on : off) : mode & b ? 'x' : '-';
  return (
    TYPE_CHAR[type] +
    r(0o400, 'r') + r(0o200, 'w') + x(0o100, 0o4000, 's', 'S') +
    r(0o040, 'r') + r(0o020, 'w') + x(0o010, 0o2000, 's', 'S') +
    r(0o004, 'r') + r(0o002, 'w') + x(0o001, 0o1000, 't', 'T')
  );
}

interface Expected {
  name: string;
  mode: string;
  uid: number;
  gid: number;
  target?: string;
  dev?: [number, number];
}

function expectedListing(t: FileTree): Expected[] {
  return t
    .paths()
    .filter((p) => p !== '')
    .map((p) => {
      const e = t.resolve(p)!;
      const x: Expected = { name: p, mode: modeString(e.type, e.mode), uid: e.uid, gid: e.gid };
      if (e.type === 'symlink') x.target = e.target;
      if (e.type === 'char' || e.type === 'block') x.dev = [e.major, e.minor];
      return x;
    });
}

/** Parses `cpio -itv --numeric-uid-gid` (GNU) lines. */
function parseCpioList(out: string): Expected[] {
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^(\S{10})\s+\d+\s+(\d+)\s+(\d+)\s+(?:(\d+),\s*(\d+)|\d+)\s+\w{3}\s+\d+\s+[\d:]+\s(.*)$/.exec(l);
      if (!m) throw new Error(`unparsed cpio line: ${l}`);
      const x: Expected = { name: m[6]!, mode: m[1]!, uid: Number(m[2]), gid: Number(m[3]) };
      if (m[4] !== undefined) x.dev = [Number(m[4]), Number(m[5])];
      if (x.mode.startsWith('l')) {
        const i = x.name.indexOf(' -> ');
        x.target = x.name.slice(i + 4);
        x.name = x.name.slice(0, i);
      }
      return x;
    });
}

function checkRoundTrip(t: FileTree, bytes: Uint8Array, contents: Map<string, Uint8Array>): void {
  const members = readCpio(bytes);
  const paths = t.paths().filter((p) => p !== '');
  expect(members.map((m) => m.name)).toEqual(paths);
  const inoOwner = new Map<number, string>();
  let nextIno = 1;
  for (const m of members) {
    const e = t.resolve(m.name)!;
    expect(cpioType(m.mode)).toBe(e.type);
    expect(m.mode & 0o7777).toBe(e.mode);
    expect([m.uid, m.gid, m.mtime]).toEqual([e.uid, e.gid, e.mtime]);
    // The file a hard link resolves to, so all its names share one inode.
    let owner = m.name;
    while (t.get(owner)!.type === 'hardlink') owner = (t.get(owner) as { target: string }).target;
    const known = [...inoOwner].find(([, o]) => o === owner);
    if (known) expect(m.ino).toBe(known[0]);
    else {
      expect(m.ino).toBe(nextIno++);
      inoOwner.set(m.ino, owner);
    }
    if (e.type === 'symlink') expect(new TextDecoder().decode(m.data)).toBe(e.target);
    if (e.type === 'char' || e.type === 'block') expect([m.rdevmajor, m.rdevminor]).toEqual([e.major, e.minor]);
  }
  // newc: a file's data rides on its last name only.
  for (const [ino, owner] of inoOwner) {
    const group = members.filter((m) => m.ino === ino);
    if (t.get(owner)!.type !== 'file') continue;
    for (const m of group) expect(m.nlink).toBe(group.length);
    for (const m of group.slice(0, -1)) expect(m.filesize).toBe(0);
    expect(Buffer.from(group[group.length - 1]!.data)).toEqual(Buffer.from(contents.get(owner)!));
  }
}

async function contentsOf(t: FileTree): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  for (const [p, e] of t.walk()) if (e.type === 'file') out.set(p, await readContent(e.content));
  return out;
}

describe('cpio newc writer', () => {
  it('round-trips through its own reader, with hard links sharing an inode and data on the last link', async () => {
    const t = sampleTree(true);
    const bytes = await writeCpio(t);
    expect(bytes.length % 4).toBe(0);
    checkRoundTrip(t, bytes, await contentsOf(t));
    const names = readCpio(bytes).map((m) => m.name);
    expect(names).not.toContain('.');
    expect(names).not.toContain('');
  });

  it('is deterministic and the stream equals the buffer', async () => {
    const a = await writeCpio(sampleTree(true));
    const b = await writeCpio(sampleTree(true));
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const parts: Uint8Array[] = [];
    for await (const c of cpioChunks(sampleTree(true))) parts.push(c);
    expect(Buffer.concat(parts).equals(Buffer.from(a))).toBe(true);
  });

  it('ends with TRAILER!!! and an empty tree is just the trailer', async () => {
    const bytes = await writeCpio(new FileTree());
    expect(readCpio(bytes)).toEqual([]);
    expect(new TextDecoder().decode(bytes)).toContain('TRAILER!!!');
    expect(bytes.length).toBe(124);
  });

  it('fails on content whose size differs from its declaration', async () => {
    const t = new FileTree();
    t.set('liar', { type: 'file', ...M, content: { size: 10, origin: 'test', async *stream() { yield new Uint8Array(3); } } });
    await expect(writeCpio(t)).rejects.toThrow(/expected 10/);
  });

  it('rejects values that do not fit the 32-bit newc fields', async () => {
    const t = new FileTree();
    t.set('old', { type: 'file', ...M, mtime: -1, content: textContent('') });
    await expect(writeCpio(t)).rejects.toThrow(/mtime -1 of "old"/);
  });

  it('GNU cpio -itv lists the same names, modes, owners, devices and targets', async () => {
    needTool('cpio', 'cpio');
    const t = sampleTree(true);
    const r = run('cpio', ['-itv', '--numeric-uid-gid', '--quiet'], { input: await writeCpio(t) });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(parseCpioList(r.stdout)).toEqual(expectedListing(t));
  });

  it('bsdtar -tvf reads it as the same archive', async () => {
    needTool('bsdtar', 'libarchive-tools');
    const t = sampleTree(true);
    const dir = tempDir('cpio');
    try {
      const f = join(dir.path, 'a.cpio');
      writeFileSync(f, await writeCpio(t));
      // bsdtar escapes non-ASCII names unless the locale is UTF-8.
      const utf8 = { env: { LC_ALL: 'C.UTF-8' } };
      const r = run('bsdtar', ['-tvf', f], utf8);
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.split('\n').filter(Boolean);
      const exp = expectedListing(t);
      expect(lines.length).toBe(exp.length);
      lines.forEach((l, i) => {
        expect(l.slice(0, 10)).toBe(exp[i]!.mode);
        // bsdtar prints "name -> target" for symlinks and "name link to other" for hard links.
        expect(l).toContain(` ${exp[i]!.name}`);
      });
      expect(run('bsdtar', ['-tf', f], utf8).stdout.split('\n').filter(Boolean)).toEqual(exp.map((e) => e.name));
    } finally {
      dir.cleanup();
    }
  });

  it('cpio -idm extracts identical bytes, links, symlinks and mtimes', async () => {
    needTool('cpio', 'cpio');
    // mknod needs root; devices are covered by the listing test.
    const t = sampleTree(false);
    const dir = tempDir('cpio-x');
    try {
      const r = run('cpio', ['-idm', '--no-absolute-filenames', '--quiet'], { cwd: dir.path, input: await writeCpio(t) });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      await expectExtracted(t, dir.path);
    } finally {
      dir.cleanup();
    }
  });

  it('property: random trees round-trip and GNU cpio agrees', async () => {
    needTool('cpio', 'cpio');
    needTool('bsdtar', 'libarchive-tools');
    await fc.assert(
      fc.asyncProperty(arbTree(), async (t) => {
        const bytes = await writeCpio(t);
        checkRoundTrip(t, bytes, await contentsOf(t));
        const r = run('cpio', ['-itv', '--numeric-uid-gid', '--quiet'], { input: bytes });
        expect(r.code, r.stderr).toBe(0);
        expect(parseCpioList(r.stdout)).toEqual(expectedListing(t));
        const dir = tempDir('cpio-p');
        const f = `${dir.path}.cpio`;
        try {
          writeFileSync(f, bytes);
          const b = run('bsdtar', ['-tf', f], { env: { LC_ALL: 'C.UTF-8' } });
          expect(b.code, b.stderr).toBe(0);
          expect(b.stdout.split('\n').filter(Boolean)).toEqual(t.paths().filter((p) => p !== ''));
          const x = run('cpio', ['-idm', '--no-absolute-filenames', '--quiet'], { cwd: dir.path, input: bytes });
          expect(x.code, x.stderr).toBe(0);
          await expectExtracted(t, dir.path);
        } finally {
          dir.cleanup();
          rmSync(f, { force: true });
        }
      }),
      { numRuns: 40 },
    );
  });
});

async function expectExtracted(t: FileTree, root: string): Promise<void> {
  const inodes = new Map<string, number>();
  for (const [p, raw] of t.walk()) {
    if (p === '') continue;
    const e = t.resolve(p)!;
    const full = join(root, p);
    const st = lstatSync(full);
    if (e.type === 'file') {
      expect(st.isFile()).toBe(true);
      expect(Buffer.from(readFileSync(full)).equals(Buffer.from(await readContent(e.content)))).toBe(true);
      expect(st.mode & 0o7777).toBe(e.mode);
      expect(st.mtimeMs / 1000).toBe(e.mtime);
      let owner = p;
      while (t.get(owner)!.type === 'hardlink') owner = (t.get(owner) as { target: string }).target;
      const seen = inodes.get(owner);
      if (seen === undefined) inodes.set(owner, st.ino);
      else expect(st.ino, `${p} should be a hard link of ${owner}`).toBe(seen);
      void raw;
    } else if (e.type === 'symlink') {
      expect(readlinkSync(full)).toBe(e.target);
    } else if (e.type === 'dir') {
      expect(st.isDirectory()).toBe(true);
    } else if (e.type === 'fifo') {
      expect(st.isFIFO()).toBe(true);
    }
  }
}

/** Small trees with odd names, hard links, symlinks, fifos, devices and empty files. */
function arbTree(): fc.Arbitrary<FileTree> {
  const seg = fc.constantFrom('a', 'b', 'B', 'dir', 'sp ace', 'ü', '-x', '.hidden', 'x.y.z', 'long'.repeat(20), '💾');
  const path = fc.array(seg, { minLength: 1, maxLength: 3 }).map((s) => s.join('/'));
  const meta = fc.record({
    mode: fc.integer({ min: 0, max: 0o7777 }).map((m) => m | 0o700),
    uid: fc.integer({ min: 0, max: 70000 }),
    gid: fc.integer({ min: 0, max: 70000 }),
    mtime: fc.integer({ min: 0, max: 0xffff_ffff }),
  });
  const op = fc.oneof(
    fc.record({ k: fc.constant('file' as const), path, meta, data: fc.uint8Array({ maxLength: 300 }) }),
    fc.record({ k: fc.constant('dir' as const), path, meta }),
    fc.record({ k: fc.constant('symlink' as const), path, meta, target: fc.constantFrom('a', '../b', '/abs/path', 'sp ace') }),
    fc.record({ k: fc.constant('fifo' as const), path, meta }),
    fc.record({ k: fc.constant('hardlink' as const), path, target: path }),
  );
  return fc.array(op, { maxLength: 12 }).map((ops) => {
    const t = new FileTree();
    for (const o of ops) {
      let e: Entry;
      if (o.k === 'file') e = { type: 'file', ...o.meta, content: bytesContent(o.data) };
      else if (o.k === 'dir') e = { type: 'dir', ...o.meta };
      else if (o.k === 'symlink') e = { type: 'symlink', ...o.meta, mode: 0o777, target: o.target };
      else if (o.k === 'fifo') e = { type: 'fifo', ...o.meta, mode: o.meta.mode & 0o777 };
      else {
        if (o.target === o.path || t.get(o.target)?.type !== 'file') continue;
        e = { type: 'hardlink', target: o.target };
      }
      t.set(o.path, e);
    }
    // Later ops may have turned a link's target into a directory; such links cannot exist.
    for (const [p, e] of [...t.walk()]) if (e.type === 'hardlink' && t.get(e.target)?.type !== 'file') t.delete(p);
    return t;
  });
}
