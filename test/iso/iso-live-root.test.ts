import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeCpio } from '../../builder/formats/cpio.ts';
import { writeSquashfs } from '../../builder/formats/squashfs/index.ts';
import { SquashfsReader } from '../../builder/formats/squashfs/reader.ts';
import { liveTree } from '../../builder/iso/live-root.ts';
import { bytesContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { needTool, run } from '../helpers/oracle-formats.ts';

/**
 * The ISO's live initrd: a build's rootfs.squashfs (written by our writer) read back by our
 * reader into a newc cpio under live/, which GNU cpio lists and extracts: ownership, modes,
 * symlinks, hard links, device nodes and file bytes as the squashfs holds them.
 */

const T = 1_700_000_000;
const te = new TextEncoder();
let work: string;

function rootfs(): FileTree {
  const t = new FileTree({ mode: 0o755, uid: 0, gid: 0, mtime: T });
  const m = { mode: 0o644, uid: 0, gid: 0, mtime: T };
  t.set('bin/busybox', { type: 'file', ...m, mode: 0o755, content: bytesContent(new Uint8Array(300_000).map((_, i) => (i * 7) % 251)) });
  t.set('sbin/init', { type: 'file', ...m, mode: 0o755, content: bytesContent(te.encode('#!/bin/busybox sh\necho hi\n')) });
  t.set('bin/sh', { type: 'symlink', ...m, mode: 0o777, target: 'busybox' });
  t.set('etc/os-release', { type: 'file', ...m, content: bytesContent(te.encode('IMAGE_ID=x\n')) });
  t.set('etc/os-release.hard', { type: 'hardlink', target: 'etc/os-release' });
  t.set('home/alice/notes', { type: 'file', ...m, uid: 1000, gid: 1000, mode: 0o600, content: bytesContent(te.encode('hello\n')) });
  t.set('dev/console', { type: 'char', ...m, mode: 0o600, major: 5, minor: 1 });
  return t;
}

describe('the installer ISO live root', () => {
  beforeAll(async () => {
    needTool('cpio', 'cpio');
    work = await mkdtemp(join(tmpdir(), 'ossify-iso-live-'));
  });
  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('is the squashfs tree under live/, as GNU cpio lists and extracts it', async () => {
    const img = join(work, 'rootfs.squashfs');
    await writeSquashfs(rootfs(), img, { compression: 'zstd', threads: 1 });
    const reader = await SquashfsReader.open(img);
    let cpio: Uint8Array;
    try {
      cpio = await writeCpio(await liveTree(reader, { mode: 0o755, uid: 0, gid: 0, mtime: T }));
    } finally {
      await reader.close();
    }
    const archive = join(work, 'live.img');
    await writeFile(archive, cpio);

    const list = run('cpio', ['-itv', '--numeric-uid-gid', '-F', archive]);
    expect(list.code, list.stderr).toBe(0);
    const line = (path: string) => list.stdout.split('\n').find((l) => l.endsWith(` ${path}`) || l.includes(` ${path} -> `)) ?? '';
    expect(line('live/sbin/init')).toMatch(/^-rwxr-xr-x\s+1\s+0\s+0\s+\d+ /);
    expect(line('live/bin/sh')).toMatch(/^lrwxrwxrwx .* live\/bin\/sh -> busybox$/);
    expect(line('live/home/alice/notes')).toMatch(/^-rw-------\s+1\s+1000\s+1000\s+6 /);
    expect(line('live/etc/os-release')).toMatch(/^-rw-r--r--\s+2\s+0\s+0 /);
    expect(line('live/dev/console')).toMatch(/^crw-------\s+1\s+0\s+0\s+5,\s+1 /);
    const paths = list.stdout.trim().split('\n').map((l) => l.split(' -> ')[0]!.split(/\s+/).pop()!);
    expect(paths.filter((p) => p !== 'live' && !p.startsWith('live/'))).toEqual([]);

    const x = join(work, 'x');
    await mkdir(x);
    // Device nodes need root to create: everything else is extracted.
    const ex = run('cpio', ['-idm', '--no-absolute-filenames', '-D', x, '-F', archive, '--nonmatching', 'live/dev/*']);
    expect(ex.code, ex.stderr).toBe(0);
    expect(await readFile(join(x, 'live/sbin/init'), 'utf8')).toBe('#!/bin/busybox sh\necho hi\n');
    expect(await readFile(join(x, 'live/bin/busybox'))).toEqual(Buffer.from(new Uint8Array(300_000).map((_, i) => (i * 7) % 251)));
    expect(await readFile(join(x, 'live/etc/os-release.hard'), 'utf8')).toBe('IMAGE_ID=x\n');
  });
});
