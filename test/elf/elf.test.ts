import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { programClosure, readDynamic } from '../../builder/elf/index.ts';
import { writeCpio } from '../../builder/formats/cpio.ts';
import { buildInitramfsTree } from '../../builder/initramfs/index.ts';
import { loadInput } from '../../builder/inputs/index.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { bytesContent, readContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { InputError } from '../../builder/util/errors.ts';
import { resolveTreePath } from '../../builder/tree/walk.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';

const CACHE = fileURLToPath(new URL('../../out/test-cache', import.meta.url));
const meta = { mode: 0o755, uid: 0, gid: 0, mtime: 0 };

/** cryptsetup-bin and every package it depends on: what the verified-boot initramfs needs. */
let crypt: FileTree;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ossify-elf-'));
  crypt = (await loadInput({ deb: 'cryptsetup-bin', depends: true } as Input, { cacheDir: CACHE })).tree;
}, 300_000);
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function bytesAt(tree: FileTree, path: string): Promise<Uint8Array> {
  const e = tree.resolve(resolveTreePath(tree, path) ?? path);
  if (e?.type !== 'file') throw new Error(`${path} is not a file`);
  return readContent(e.content);
}

/** Writes a tree onto the host (files, dirs, symlinks) so real tools can look at it. */
async function materialize(tree: FileTree, root: string): Promise<void> {
  for (const [p, e] of tree.walk()) {
    const out = join(root, p);
    if (e.type === 'dir') await mkdir(out, { recursive: true });
    else if (e.type === 'symlink') {
      await mkdir(dirname(out), { recursive: true });
      await symlink(e.target, out);
    } else {
      const inode = tree.resolve(p);
      if (inode?.type !== 'file') throw new Error(`unexpected ${e.type} at ${p}`);
      await mkdir(dirname(out), { recursive: true });
      await writeFile(out, await readContent(inode.content));
      await chmod(out, inode.mode & 0o777);
    }
  }
}

/**
 * A minimal dynamically linked ELF (no code): one PT_LOAD mapping the file, PT_INTERP,
 * PT_DYNAMIC with DT_NEEDED / DT_RUNPATH / DT_RPATH. Enough for readelf and for ld.so's
 * search logic, which is what is tested.
 */
function makeElf(o: { cls?: 32 | 64; machine?: number; interp?: string; needed?: string[]; runpath?: string; rpath?: string }): Buffer {
  const is64 = (o.cls ?? 64) === 64;
  const ehsize = is64 ? 64 : 52;
  const phent = is64 ? 56 : 32;
  const phnum = o.interp ? 3 : 2;
  const strs = ['', ...(o.needed ?? []), ...(o.runpath ? [o.runpath] : []), ...(o.rpath ? [o.rpath] : []), ...(o.interp ? [o.interp] : [])];
  const offs = new Map<string, number>();
  let strtab = '';
  for (const s of strs) {
    if (!offs.has(s)) offs.set(s, Buffer.byteLength(strtab));
    strtab += `${s}\0`;
  }
  const strOff = ehsize + phent * phnum;
  const strBytes = Buffer.from(strtab);
  const dynOff = Math.ceil((strOff + strBytes.length) / 8) * 8;
  const dyn: [number, number][] = [
    ...(o.needed ?? []).map((n) => [1, offs.get(n)!] as [number, number]),
    ...(o.runpath ? [[29, offs.get(o.runpath)!] as [number, number]] : []),
    ...(o.rpath ? [[15, offs.get(o.rpath)!] as [number, number]] : []),
    [5, 0x400000 + strOff],
    [10, strBytes.length],
    [0, 0],
  ];
  const dynSize = dyn.length * (is64 ? 16 : 8);
  const total = dynOff + dynSize;
  const b = Buffer.alloc(total);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = is64 ? 2 : 1;
  b[5] = 1;
  b[6] = 1;
  b.writeUInt16LE(3, 16); // ET_DYN
  b.writeUInt16LE(o.machine ?? 62, 18);
  b.writeUInt32LE(1, 20);
  const w = (off: number, v: number) => (is64 ? b.writeBigUInt64LE(BigInt(v), off) : b.writeUInt32LE(v, off));
  if (is64) {
    w(0x20, ehsize);
    b.writeUInt16LE(ehsize, 0x34);
    b.writeUInt16LE(phent, 0x36);
    b.writeUInt16LE(phnum, 0x38);
  } else {
    w(0x1c, ehsize);
    b.writeUInt16LE(ehsize, 0x28);
    b.writeUInt16LE(phent, 0x2a);
    b.writeUInt16LE(phnum, 0x2c);
  }
  const ph = (i: number, type: number, offset: number, size: number) => {
    const p = ehsize + i * phent;
    b.writeUInt32LE(type, p);
    if (is64) {
      b.writeUInt32LE(4, p + 4);
      w(p + 8, offset);
      w(p + 16, 0x400000 + offset);
      w(p + 24, 0x400000 + offset);
      w(p + 32, size);
      w(p + 40, size);
      w(p + 48, 8);
    } else {
      w(p + 4, offset);
      w(p + 8, 0x400000 + offset);
      w(p + 12, 0x400000 + offset);
      w(p + 16, size);
      w(p + 20, size);
      w(p + 24, 4);
      w(p + 28, 4);
    }
  };
  let i = 0;
  ph(i++, 1, 0, total);
  if (o.interp) ph(i++, 3, strOff + offs.get(o.interp)!, Buffer.byteLength(o.interp) + 1);
  ph(i++, 2, dynOff, dynSize);
  strBytes.copy(b, strOff);
  dyn.forEach(([tag, val], k) => {
    const off = dynOff + k * (is64 ? 16 : 8);
    w(off, tag);
    w(off + (is64 ? 8 : 4), val);
  });
  return b;
}

describe('readDynamic', () => {
  it('reads what readelf reads from Debian\'s binaries: interpreter, NEEDED, SONAME', async () => {
    requireTool('readelf', 'binutils');
    for (const path of ['sbin/veritysetup', 'lib/x86_64-linux-gnu/libcryptsetup.so.12', 'lib/x86_64-linux-gnu/libc.so.6', 'usr/lib/x86_64-linux-gnu/libcrypto.so.3', 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2']) {
      const bytes = await bytesAt(crypt, path);
      const file = join(work, 'readelf.bin');
      await writeFile(file, bytes);
      const dynText = runOk('readelf', ['-dW', file]);
      const needed = [...dynText.matchAll(/\(NEEDED\)\s+Shared library: \[(.+)\]/g)].map((m) => m[1]);
      const soname = /\(SONAME\)\s+Library soname: \[(.+)\]/.exec(dynText)?.[1];
      const interp = /\[Requesting program interpreter: (.+)\]/.exec(runOk('readelf', ['-lW', file]))?.[1];
      const info = readDynamic(bytes);
      expect({ path, needed: info.needed, soname: info.soname, interp: info.interpreter }).toEqual({ path, needed, soname, interp });
      expect(info).toMatchObject({ class: 64, machine: 62, littleEndian: true });
    }
  });

  it('reads the synthetic ELFs of these tests as readelf does, both classes', async () => {
    requireTool('readelf', 'binutils');
    for (const cls of [32, 64] as const) {
      const bytes = makeElf({ cls, machine: cls === 64 ? 62 : 3, interp: '/lib/ld.so', needed: ['liba.so.1', 'libb.so.2'], runpath: '$ORIGIN/../lib', rpath: '/opt/r' });
      const file = join(work, `synthetic${cls}`);
      await writeFile(file, bytes);
      const text = runOk('readelf', ['-dlW', file]);
      expect(text).toContain('Shared library: [liba.so.1]');
      expect(text).toContain('Library runpath: [$ORIGIN/../lib]');
      expect(text).toContain('[Requesting program interpreter: /lib/ld.so]');
      expect(readDynamic(bytes)).toMatchObject({ class: cls, interpreter: '/lib/ld.so', needed: ['liba.so.1', 'libb.so.2'], runpath: ['$ORIGIN/../lib'], rpath: ['/opt/r'] });
    }
  });
});

describe('programClosure', () => {
  it('gives veritysetup everything ld.so opens to run it, and nothing from the host', async () => {
    const c = await programClosure(crypt, ['usr/sbin/veritysetup'], 'initramfs.programs[0]');
    expect(c.tree.get('usr/sbin/veritysetup')).toMatchObject({ type: 'symlink', target: '/sbin/veritysetup' });
    expect(c.tree.get('lib64/ld-linux-x86-64.so.2')).toMatchObject({ type: 'symlink' });
    const root = join(work, 'closure');
    await materialize(c.tree, root);

    // The oracle: the closure's own dynamic loader (its real file: lib64/ld-linux-x86-64.so.2
    // is an absolute symlink, which on the host would lead to the host's), told to look only
    // inside the closure.
    const ld = join(root, resolveTreePath(c.tree, 'lib64/ld-linux-x86-64.so.2')!);
    const libPath = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu'].map((d) => join(root, d)).join(':');
    const listed = runOk(ld, ['--inhibit-cache', '--library-path', libPath, '--list', join(root, 'usr/sbin/veritysetup')]);
    const resolved = [...listed.matchAll(/=> (\S+) \(0x/g)].map((m) => m[1]!);
    expect(resolved.length).toBeGreaterThan(10);
    for (const p of resolved) expect(p.startsWith(`${root}/`), p).toBe(true);
    const realOf = (p: string) => resolveTreePath(c.tree, p.slice(root.length + 1))!;
    const theirs = new Set([...resolved.map(realOf), realOf(ld), 'sbin/veritysetup']);
    expect(new Set(c.files)).toEqual(theirs);

    const version = run(ld, ['--inhibit-cache', '--library-path', libPath, join(root, 'sbin/veritysetup'), '--version']);
    expect(version.code, version.stderr).toBe(0);
    expect(version.stdout).toMatch(/^veritysetup 2\.\d+\.\d+/);
  });

  it('follows RUNPATH with $ORIGIN, ld.so.conf, skips a library of the wrong class, copies symlink chains', async () => {
    const t = new FileTree();
    const f = (p: string, data: Buffer) => t.set(p, { type: 'file', ...meta, content: bytesContent(data) });
    f('opt/app/bin/app', makeElf({ interp: '/lib64/ld-linux-x86-64.so.2', needed: ['liba.so.1'], runpath: '$ORIGIN/../lib' }));
    f('opt/app/lib/liba.so.1.0', makeElf({ needed: ['libb.so.2'] }));
    t.set('opt/app/lib/liba.so.1', { type: 'symlink', ...meta, mode: 0o777, target: 'liba.so.1.0' });
    f('opt/first/libb.so.2', makeElf({ cls: 32, machine: 3 }));
    f('lib/x86_64-linux-gnu/libb.so.2', makeElf({}));
    f('lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', makeElf({}));
    t.set('lib64/ld-linux-x86-64.so.2', { type: 'symlink', ...meta, mode: 0o777, target: '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2' });
    t.set('etc/ld.so.conf', { type: 'file', ...meta, content: bytesContent(Buffer.from('include /etc/ld.so.conf.d/*.conf\n')) });
    t.set('etc/ld.so.conf.d/first.conf', { type: 'file', ...meta, content: bytesContent(Buffer.from('# the 32-bit one comes first\n/opt/first\n')) });
    const c = await programClosure(t, ['opt/app/bin/app'], 'rootfs.programs[0]');
    expect(c.files).toEqual(['opt/app/bin/app', 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 'opt/app/lib/liba.so.1.0', 'lib/x86_64-linux-gnu/libb.so.2']);
    expect(c.tree.get('opt/app/lib/liba.so.1')).toMatchObject({ type: 'symlink', target: 'liba.so.1.0' });
    expect(c.tree.has('opt/first')).toBe(false);
  });

  it('names the program, the library and where it looked when a library is missing', async () => {
    const t = new FileTree();
    t.set('bin/app', { type: 'file', ...meta, content: bytesContent(makeElf({ needed: ['libgone.so.1'] })) });
    const err = await programClosure(t, ['bin/app'], 'initramfs.programs[2]').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toBe('initramfs.programs[2]: bin/app needs libgone.so.1, which is not in the input (searched /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu, /lib64, /usr/lib64, /lib, /usr/lib)');
    await expect(programClosure(t, ['bin/nope'], 'x')).rejects.toThrow(/x: program bin\/nope: bin\/nope is not in the tree/);
  });

  it('brings a script\'s #! interpreter', async () => {
    const t = new FileTree();
    t.set('usr/bin/tool', { type: 'file', ...meta, content: bytesContent(Buffer.from('#!/bin/dash\necho\n')) });
    t.set('bin/dash', { type: 'file', ...meta, content: bytesContent(makeElf({})) });
    expect((await programClosure(t, ['usr/bin/tool'], 'x')).files).toEqual(['usr/bin/tool', 'bin/dash']);
  });
});

describe('programs in the initramfs', () => {
  it('cpio lists veritysetup with its libraries, owned by root and stamped with the epoch', async () => {
    requireTool('cpio', 'cpio');
    const c = await programClosure(crypt, ['sbin/veritysetup'], 'initramfs.programs[0]');
    const busybox = bytesContent(Buffer.from('not really busybox'));
    const tree = buildInitramfsTree({ busybox, modules: { kernelVersion: '6.1.0-test', modules: [], builtin: [] }, kernelVersion: '6.1.0-test', epoch: 1_700_000_000, programs: c.tree });
    const cpio = await writeCpio(tree);
    const listing = runOk('cpio', ['-tv', '--quiet', '--numeric-uid-gid'], { input: Buffer.from(cpio) });
    const names = runOk('cpio', ['-t', '--quiet'], { input: Buffer.from(cpio) }).split('\n');
    for (const f of c.files) expect(names).toContain(f);
    expect(names).toContain('lib64/ld-linux-x86-64.so.2');
    expect(names).toContain('init');
    expect(listing).toMatch(/^-rwxr-xr-x\s+1\s+0\s+0\s+\d+\s+Nov 14\s+2023 sbin\/veritysetup$/m);
  });

  it('refuses a program closure that would add /bin/sh', () => {
    const programs = new FileTree();
    programs.set('bin/sh', { type: 'file', ...meta, content: bytesContent(Buffer.from('x')) });
    expect(() =>
      buildInitramfsTree({ busybox: bytesContent(Buffer.from('b')), modules: { kernelVersion: 'k', modules: [], builtin: [] }, kernelVersion: 'k', epoch: 0, programs }),
    ).toThrow(/\/bin\/sh/);
  });
});
