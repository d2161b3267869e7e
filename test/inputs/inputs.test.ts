import { chmod, cp, link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobCache } from '../../builder/inputs/cache.ts';
import { loadInput, type LoadedInput } from '../../builder/inputs/index.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { readContent } from '../../builder/tree/content.ts';
import type { FileTree } from '../../builder/tree/tree.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';

/** Shared with the kernel and initramfs tests: packages are downloaded once per checkout. */
const CACHE = fileURLToPath(new URL('../../out/test-cache', import.meta.url));
const ctx = { cacheDir: CACHE };

interface Listed {
  type: string;
  perms: string;
  size: string;
  target?: string;
}

/** `tar -tvf` / `dpkg-deb -c` listing → path → what GNU tar shows. */
function parseTarListing(text: string): Map<string, Listed> {
  const out = new Map<string, Listed>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = /^(.)(.{9})\s+\S+\s+(\d+,\s*\d+|\d+)\s+\S+\s+\S+\s+(.*)$/.exec(line);
    if (!m) throw new Error(`unparsed listing line: ${line}`);
    const [, t, perms, size, rest] = m as unknown as [string, string, string, string, string];
    let name = rest;
    let target: string | undefined;
    if (t === 'l') [name, target] = rest.split(' -> ') as [string, string];
    if (t === 'h') [name, target] = rest.split(' link to ') as [string, string];
    const path = name.replace(/^\.\//, '').replace(/^\.$/, '').replace(/\/$/, '');
    out.set(path, {
      type: t,
      perms,
      size: size.replace(/\s+/g, ''),
      ...(target !== undefined ? { target: target.replace(/^\.\//, '') } : {}),
    });
  }
  return out;
}

function permString(mode: number): string {
  const bit = (m: number, c: string) => (mode & m ? c : '-');
  const special = (x: number, s: number, on: string) => {
    const hasX = (mode & x) !== 0;
    if (mode & s) return hasX ? on : on.toUpperCase();
    return hasX ? 'x' : '-';
  };
  return (
    bit(0o400, 'r') + bit(0o200, 'w') + special(0o100, 0o4000, 's') +
    bit(0o040, 'r') + bit(0o020, 'w') + special(0o010, 0o2000, 's') +
    bit(0o004, 'r') + bit(0o002, 'w') + special(0o001, 0o1000, 't')
  );
}

const TYPE_CHAR = { file: '-', dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's', hardlink: 'h' } as const;

/** The tree in the same shape as the listing. */
function treeListing(tree: FileTree): Map<string, Listed> {
  const out = new Map<string, Listed>();
  for (const [p, e] of tree.walk()) {
    const inode = tree.resolve(p)!;
    const size = e.type === 'file' ? String(e.content.size) : e.type === 'char' || e.type === 'block' ? `${e.major},${e.minor}` : '0';
    out.set(p, {
      type: TYPE_CHAR[e.type],
      perms: permString(inode.mode),
      size,
      ...(e.type === 'symlink' || e.type === 'hardlink' ? { target: e.target } : {}),
    });
  }
  return out;
}

/**
 * `hasRoot: false` is for archives without a `./` entry and without entries for every
 * parent: the tree's implicit parent directories are then not in the listing.
 */
function expectSameListing(tree: FileTree, listing: string, opts: { hasRoot: boolean }): void {
  const want = parseTarListing(listing);
  const got = treeListing(tree);
  if (!opts.hasRoot) {
    for (const [p, e] of [...got]) if (!want.has(p) && e.type === 'd') got.delete(p);
  }
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [p, w] of want) expect({ path: p, ...got.get(p) }).toEqual({ path: p, ...w });
}

async function load(input: Record<string, unknown>): Promise<LoadedInput> {
  return loadInput(input as Input, ctx);
}

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ossify-inputs-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('deb inputs by package name', () => {
  it('unpacks busybox-static exactly as dpkg-deb lists it, and records its sha256', async () => {
    requireTool('dpkg-deb', 'dpkg');
    const r = await load({ deb: 'busybox-static', depends: false });
    expect(r.sources).toHaveLength(1);
    const src = r.sources[0]!;
    expect(src).toMatchObject({ kind: 'deb', name: 'busybox-static' });
    expect(src.version).toMatch(/1\.35/);
    expect(src.sha256).toMatch(/^[0-9a-f]{64}$/);
    const blob = new BlobCache(CACHE).blobPath(src.sha256!);
    expectSameListing(r.tree, runOk('dpkg-deb', ['-c', blob]), { hasRoot: true });
    // the bytes too, not just the sizes
    const extracted = join(work, 'bb-x');
    runOk('dpkg-deb', ['-x', blob, extracted]);
    const e = r.tree.get('bin/busybox');
    expect(e?.type).toBe('file');
    if (e?.type === 'file') expect(Buffer.compare(await readContent(e.content), await readFile(join(extracted, 'bin/busybox')))).toBe(0);
  });

  it('follows depends globs from the kernel metapackage to the real kernel, matching dpkg-deb', async () => {
    requireTool('dpkg-deb', 'dpkg');
    const r = await load({ deb: 'linux-image-cloud-amd64', depends: ['linux-image-*'] });
    expect(r.sources.map((s) => s.name)).toEqual(['linux-image-cloud-amd64', expect.stringMatching(/^linux-image-6\.1\.0-\d+-cloud-amd64$/)]);
    const real = r.sources[1]!;
    const listing = runOk('dpkg-deb', ['-c', new BlobCache(CACHE).blobPath(real.sha256!)]);
    // The metapackage only adds /usr/share/doc; compare the real package's part exactly.
    const only = await load({ deb: real.name, depends: false });
    expectSameListing(only.tree, listing, { hasRoot: true });
    expect(r.tree.get(`boot/vmlinuz-${real.name.replace('linux-image-', '')}`)?.type).toBe('file');
    expect(r.tree.has('usr/share/doc/linux-image-cloud-amd64')).toBe(true);
  });

  it('does not follow dependencies unless asked', async () => {
    const r = await load({ deb: 'linux-image-cloud-amd64', depends: false });
    expect(r.sources.map((s) => s.name)).toEqual(['linux-image-cloud-amd64']);
    expect(r.tree.has('boot')).toBe(false);
  });

  it('names an unknown package in its error', async () => {
    await expect(load({ deb: 'ossify-no-such-package', depends: false })).rejects.toThrow(/ossify-no-such-package/);
    await expect(load({ deb: 'ossify-no-such-package', depends: false })).rejects.toBeInstanceOf(InputError);
  });

  it('refuses values that are not package names (no apt option injection)', async () => {
    await expect(load({ deb: '-oDebug::pkgAcquire=1', depends: false })).rejects.toThrow(/not a Debian package name/);
  });

  it('refuses a tampered cache blob instead of using it', async () => {
    const good = await load({ deb: 'busybox-static', depends: false });
    const sha = good.sources[0]!.sha256!;
    const cache = join(work, 'tampered-cache');
    await mkdir(join(cache, 'blobs', 'sha256'), { recursive: true });
    await cp(join(CACHE, 'deb'), join(cache, 'deb'), { recursive: true });
    const bytes = await readFile(new BlobCache(CACHE).blobPath(sha));
    const at = bytes.length - 100;
    bytes[at] = bytes[at]! ^ 0xff;
    await writeFile(join(cache, 'blobs', 'sha256', sha), bytes);
    await expect(loadInput({ deb: 'busybox-static', depends: false } as Input, { cacheDir: cache })).rejects.toThrow(
      new RegExp(`cache blob .*${sha}.* corrupt or was tampered with`),
    );
  });
});

describe('deb inputs by file path', () => {
  it('unpacks a local .deb and reads its name and version from control', async () => {
    const byName = await load({ deb: 'busybox-static', depends: false });
    const src = byName.sources[0]!;
    const file = join(work, 'busybox.deb');
    await cp(new BlobCache(CACHE).blobPath(src.sha256!), file);
    const r = await load({ deb: file, depends: false });
    expect(r.sources).toEqual([src]);
    expect([...r.tree.paths()]).toEqual([...byName.tree.paths()]);
  });

  it('rejects a file that is not a Debian package, naming it', async () => {
    const file = join(work, 'junk.deb');
    await writeFile(file, 'not an archive');
    await expect(load({ deb: file, depends: false })).rejects.toThrow(new RegExp(`deb:${file}.*not a valid ar archive`));
  });
});

describe('include, exclude and target', () => {
  it('applies globs after unpacking and places the result under target', async () => {
    const r = await load({ deb: 'busybox-static', depends: false, include: ['bin/**', 'usr/share/doc/*/copyright'], exclude: ['usr/share/doc/**/changelog*'], target: '/opt/bb' });
    expect(r.tree.paths()).toEqual([
      '', 'opt', 'opt/bb', 'opt/bb/bin', 'opt/bb/bin/busybox', 'opt/bb/usr', 'opt/bb/usr/share', 'opt/bb/usr/share/doc',
      'opt/bb/usr/share/doc/busybox-static', 'opt/bb/usr/share/doc/busybox-static/copyright',
    ]);
    expect(r.tree.get('opt/bb/bin/busybox')).toMatchObject({ type: 'file', mode: 0o755 });
  });

  it('turns a hard link into the file when the file itself is filtered out', async () => {
    const tar = join(work, 'links.tar');
    await writeFile(tar, await packTar([
      { name: 'a/file', content: 'shared' },
      { name: 'b/link1', type: 'link', linkname: 'a/file' },
      { name: 'b/link2', type: 'link', linkname: 'a/file' },
    ]));
    const r = await load({ tar, exclude: ['a'] });
    expect(r.tree.get('b/link1')?.type).toBe('file');
    expect(r.tree.get('b/link2')).toEqual({ type: 'hardlink', target: 'b/link1' });
    expect(r.tree.has('a')).toBe(false);
  });

  it('refuses patterns that leave nothing', async () => {
    await expect(load({ deb: 'busybox-static', depends: false, include: ['nothing/**'] })).rejects.toThrow(/leave nothing/);
  });
});

interface PackEntry {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'block-device' | 'fifo';
  content?: string;
  linkname?: string;
  mode?: number;
  devmajor?: number;
  devminor?: number;
  pax?: Record<string, string>;
}

async function packTar(entries: PackEntry[]): Promise<Uint8Array> {
  const pack = tarStream.pack();
  const chunks: Uint8Array[] = [];
  const done = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Uint8Array>) chunks.push(c);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
      mtime: new Date(1_700_000_000_000),
      uid: 0,
      gid: 0,
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      ...(e.devmajor !== undefined ? { devmajor: e.devmajor, devminor: e.devminor ?? 0 } : {}),
      ...(e.pax ? { pax: e.pax } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      if (type === 'file') pack.entry(header, e.content ?? '', (err) => (err ? reject(err) : resolve()));
      else pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

describe('tar inputs', () => {
  let src: string;
  let plain: string;
  beforeAll(async () => {
    requireTool('tar', 'tar');
    src = join(work, 'src');
    await mkdir(join(src, 'etc/app'), { recursive: true });
    await mkdir(join(src, 'usr/bin'), { recursive: true });
    await writeFile(join(src, 'etc/app/conf'), 'key = value\n');
    await writeFile(join(src, 'usr/bin/tool'), Buffer.alloc(300_000, 7));
    await chmod(join(src, 'usr/bin/tool'), 0o4755);
    await symlink('../etc/app/conf', join(src, 'usr/conf-link'));
    await symlink('/etc/app/conf', join(src, 'usr/abs-link'));
    await link(join(src, 'etc/app/conf'), join(src, 'etc/app/conf-hard'));
    await mkdir(join(src, 'tmp'));
    await chmod(join(src, 'tmp'), 0o1777);
    await writeFile(join(src, `long-${'n'.repeat(150)}`), 'long name');
    plain = join(work, 'plain.tar');
    runOk('tar', ['--format=posix', '--sort=name', '--owner=0', '--group=0', '-C', src, '-cf', plain, '.']);
  });

  const variants: [string, (tar: string) => string][] = [
    ['plain', (tar) => tar],
    ['gzip', (tar) => (runOk('gzip', ['-k', '-9', '-f', tar]), `${tar}.gz`)],
    ['xz', (tar) => (runOk('xz', ['-k', '-f', tar]), `${tar}.xz`)],
    ['zstd (file, content size recorded)', (tar) => (runOk('zstd', ['-q', '-f', tar, '-o', `${tar}.zst`]), `${tar}.zst`)],
    [
      'zstd (piped: no content size)',
      (tar) => {
        const out = `${tar}.piped.zst`;
        runOk('sh', ['-c', 'zstd -q -c < "$1" > "$2"', 'sh', tar, out]);
        return out;
      },
    ],
  ];
  for (const [name, make] of variants) {
    it(`reads a ${name} tar exactly as tar -tvf lists it`, async () => {
      if (name.startsWith('zstd')) requireTool('zstd', 'zstd');
      const file = make(plain);
      const r = await load({ tar: file });
      expectSameListing(r.tree, runOk('tar', ['-tvf', file]), { hasRoot: true });
      expect(r.sources).toEqual([{ kind: 'tar', name: file.slice(file.lastIndexOf('/') + 1), sha256: expect.stringMatching(/^[0-9a-f]{64}$/) }]);
      const tool = r.tree.get('usr/bin/tool');
      expect(tool).toMatchObject({ type: 'file', mode: 0o4755, uid: 0, gid: 0 });
      if (tool?.type === 'file') expect(Buffer.compare(await readContent(tool.content), Buffer.alloc(300_000, 7))).toBe(0);
      expect(r.tree.get('usr/abs-link')).toMatchObject({ type: 'symlink', target: '/etc/app/conf' });
    });
  }

  it('reads a multi-frame zstd stream (e.g. pzstd) by magic, whatever the file is called', async () => {
    requireTool('zstd', 'zstd');
    const bytes = await readFile(plain);
    const half = Math.floor(bytes.length / 2);
    const a = join(work, 'a.part');
    const b = join(work, 'b.part');
    await writeFile(a, bytes.subarray(0, half));
    await writeFile(b, bytes.subarray(half));
    runOk('zstd', ['-q', '-f', a, b]);
    const multi = join(work, 'multi.tar.gz'); // misnamed on purpose
    await writeFile(multi, Buffer.concat([await readFile(`${a}.zst`), await readFile(`${b}.zst`)]));
    const r = await load({ tar: multi });
    expectSameListing(r.tree, runOk('tar', ['-tvf', plain]), { hasRoot: true });
  });

  it('keeps devices, fifos, PAX metadata and libarchive xattrs when allowed', async () => {
    const tar = join(work, 'special.tar');
    await writeFile(tar, await packTar([
      { name: 'dev/', type: 'directory' },
      { name: 'dev/console', type: 'character-device', mode: 0o600, devmajor: 5, devminor: 1 },
      { name: 'dev/sda', type: 'block-device', mode: 0o660, devmajor: 8, devminor: 0 },
      { name: 'run/fifo', type: 'fifo', mode: 0o644 },
      { name: 'bin/ping', content: 'x', mode: 0o755, pax: { 'LIBARCHIVE.xattr.security.capability': Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]).toString('base64'), mtime: '1234567890.5', uid: '1000' } },
    ]));
    // Devices and xattrs are kept only when the profile allows them (see inputs-layers.test.ts).
    const r = await load({ tar, allow: { devices: true, xattrs: true } });
    expect(r.tree.get('dev/console')).toMatchObject({ type: 'char', major: 5, minor: 1, mode: 0o600 });
    expect(r.tree.get('dev/sda')).toMatchObject({ type: 'block', major: 8, minor: 0, mode: 0o660 });
    expect(r.tree.get('run/fifo')).toMatchObject({ type: 'fifo' });
    const ping = r.tree.get('bin/ping');
    expect(ping).toMatchObject({ mtime: 1234567890, uid: 1000 });
    expect(ping?.type !== 'hardlink' && ping?.xattrs?.['security.capability']).toEqual(Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]));
    expectSameListing(r.tree, runOk('tar', ['-tvf', tar]), { hasRoot: false });
  });

  const evil: [string, PackEntry[], RegExp][] = [
    ['a ../ name', [{ name: '../x', content: 'x' }], /tar entry "\.\.\/x".*'\.\.'/],
    ['a nested ../ name', [{ name: 'a/../../x', content: 'x' }], /tar entry "a\/\.\.\/\.\.\/x"/],
    ['an absolute name', [{ name: '/abs', content: 'x' }], /tar entry "\/abs".*absolute/],
    ['a hard link out of the tree', [{ name: 'ok', content: 'x' }, { name: 'pw', type: 'link', linkname: '../../etc/passwd' }], /tar entry "pw".*hard link target.*'\.\.'/],
    ['an absolute hard link', [{ name: 'pw', type: 'link', linkname: '/etc/passwd' }], /tar entry "pw".*hard link target "\/etc\/passwd" is absolute/],
    ['a hard link to nothing', [{ name: 'pw', type: 'link', linkname: 'etc/passwd' }], /tar entry "pw".*not earlier in the archive/],
    ['a hard link to a directory', [{ name: 'd/', type: 'directory' }, { name: 'l', type: 'link', linkname: 'd' }], /tar entry "l".*is a dir, not a file/],
  ];
  for (const [what, entries, message] of evil) {
    it(`rejects ${what}, naming the input and the entry`, async () => {
      const tar = join(work, `evil-${what.replace(/\W+/g, '-')}.tar`);
      await writeFile(tar, await packTar(entries));
      const err = await load({ tar }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InputError);
      expect((err as Error).message).toContain(`tar:${tar}`);
      expect((err as Error).message).toMatch(message);
    });
  }

  it('keeps symlinks that point outside the tree verbatim (they resolve inside the image)', async () => {
    const tar = join(work, 'links-out.tar');
    await writeFile(tar, await packTar([{ name: 'etc/resolv.conf', type: 'symlink', linkname: '../../../run/resolv.conf' }]));
    const r = await load({ tar });
    expect(r.tree.get('etc/resolv.conf')).toMatchObject({ type: 'symlink', target: '../../../run/resolv.conf' });
  });

  it('reports a truncated or corrupt archive with the input named', async () => {
    const bytes = await readFile(`${plain}.gz`);
    const cut = join(work, 'cut.tar.gz');
    await writeFile(cut, bytes.subarray(0, bytes.length >> 1));
    await expect(load({ tar: cut })).rejects.toThrow(new RegExp(`tar:${cut}`));
    const xzCut = join(work, 'cut.tar.xz');
    const xz = await readFile(`${plain}.xz`);
    await writeFile(xzCut, xz.subarray(0, xz.length >> 1));
    await expect(load({ tar: xzCut })).rejects.toThrow(new RegExp(`tar:${xzCut}.*xz`));
  });

  it('is deterministic: the same archive gives the same tree twice', async () => {
    const a = await load({ tar: `${plain}.xz` });
    const b = await load({ tar: `${plain}.xz` });
    expect(treeListing(a.tree)).toEqual(treeListing(b.tree));
  });
});

describe('dir inputs', () => {
  it('walks with lstat, keeps only the execute bit, and never leaks host ownership or times', async () => {
    const d = join(work, 'overlay');
    await mkdir(join(d, 'sbin'), { recursive: true });
    await mkdir(join(d, 'etc/ssh'), { recursive: true });
    await writeFile(join(d, 'sbin/init'), '#!/bin/sh\n');
    await chmod(join(d, 'sbin/init'), 0o775);
    await writeFile(join(d, 'etc/motd'), 'hi\n');
    await chmod(join(d, 'etc/motd'), 0o664);
    await writeFile(join(d, 'etc/ssh/key'), 'k');
    await chmod(join(d, 'etc/ssh/key'), 0o600);
    await symlink('/proc/self/mounts', join(d, 'etc/mtab'));
    await link(join(d, 'etc/motd'), join(d, 'etc/motd.hard'));
    const r = await load({ dir: d });
    expect(r.sources).toEqual([{ kind: 'dir', name: 'overlay' }]);
    expect(r.tree.get('sbin/init')).toMatchObject({ type: 'file', mode: 0o755, uid: 0, gid: 0, mtime: 0 });
    expect(r.tree.get('etc/motd')).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0 });
    expect(r.tree.get('etc/ssh/key')).toMatchObject({ mode: 0o644 });
    expect(r.tree.get('etc/ssh')).toMatchObject({ type: 'dir', mode: 0o755, mtime: 0 });
    expect(r.tree.get('etc/mtab')).toMatchObject({ type: 'symlink', target: '/proc/self/mounts', uid: 0 });
    expect(r.tree.get('etc/motd.hard')).toEqual({ type: 'hardlink', target: 'etc/motd' });
    const again = await load({ dir: d, target: 'x' });
    expect(again.tree.paths()).toEqual(['', 'x', ...r.tree.paths().slice(1).map((p) => `x/${p}`)]);
  });

  it('names a missing directory', async () => {
    await expect(load({ dir: join(work, 'nope') })).rejects.toThrow(/dir:.*nope/);
  });
});

describe('bsdtar agrees on what we read', () => {
  it('lists the same names for busybox-static\'s data.tar as bsdtar', async () => {
    requireTool('bsdtar', 'libarchive-tools');
    requireTool('dpkg-deb', 'dpkg');
    const r = await load({ deb: 'busybox-static', depends: false });
    const data = join(work, 'bb-data.tar');
    const res = run('sh', ['-c', 'dpkg-deb --fsys-tarfile "$1" > "$2"', 'sh', new BlobCache(CACHE).blobPath(r.sources[0]!.sha256!), data]);
    expect(res.code).toBe(0);
    const names = runOk('bsdtar', ['-tf', data]).split('\n').filter(Boolean).map((n) => n.replace(/^\.\/?/, '').replace(/\/$/, ''));
    expect(names.sort()).toEqual(r.tree.paths().sort());
  });
});
