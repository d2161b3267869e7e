import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import * as tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyLayer, applyTree } from '../../builder/inputs/apply.ts';
import { readArchive } from '../../builder/inputs/archive.ts';
import { containedPath } from '../../builder/inputs/contain.ts';
import { loadInput } from '../../builder/inputs/index.ts';
import { applyAllow } from '../../builder/inputs/policy.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { bytesContent, readContent } from '../../builder/tree/content.ts';
import { FileTree, type Entry } from '../../builder/tree/tree.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 0 };
const file = (text: string, extra: Partial<typeof meta> = {}): Entry => ({ type: 'file', ...meta, ...extra, content: bytesContent(Buffer.from(text)) });
const link = (target: string): Entry => ({ type: 'symlink', ...meta, mode: 0o777, target });

function tree(entries: Record<string, Entry>): FileTree {
  const t = new FileTree();
  for (const [p, e] of Object.entries(entries)) t.set(p, e);
  return t;
}

async function text(t: FileTree, p: string): Promise<string> {
  const e = t.resolve(p);
  if (e?.type !== 'file') throw new Error(`${p} is ${e?.type ?? 'missing'}`);
  return Buffer.from(await readContent(e.content)).toString();
}

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ossify-layers-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('containedPath', () => {
  const t = tree({ 'usr/lib/x': file('x'), lib: link('usr/lib'), abs: link('/usr'), up: link('../../../../usr'), loop1: link('loop2'), loop2: link('loop1') });
  it('follows the tree\'s own directory symlinks for the parents, never the last component', () => {
    expect(containedPath(t, 'lib/y.so', 'o')).toBe('usr/lib/y.so');
    expect(containedPath(t, 'abs/lib/y', 'o')).toBe('usr/lib/y');
    expect(containedPath(t, 'lib', 'o')).toBe('lib');
  });
  it('clamps .. and absolute targets at the tree root: nothing leads outside', () => {
    expect(containedPath(t, 'up/bin/sh', 'o')).toBe('usr/bin/sh');
  });
  it('names the input on a symlink loop', () => {
    expect(() => containedPath(t, 'loop1/x', 'tar:/in.tar')).toThrow(/tar:\/in\.tar: entry "loop1\/x": too many levels of symbolic links/);
  });
});

describe('applyTree (inputs layered onto each other)', () => {
  it('keeps a merged-/usr symlink when a later input ships files under it', async () => {
    const base = tree({ lib: link('usr/lib'), 'usr/lib/a.so': file('a') });
    applyTree(base, tree({ 'lib/x86_64-linux-gnu/b.so': file('b') }), 'deb:b');
    expect(base.get('lib')).toMatchObject({ type: 'symlink', target: 'usr/lib' });
    expect(await text(base, 'usr/lib/x86_64-linux-gnu/b.so')).toBe('b');
    expect(base.has('usr/lib/a.so')).toBe(true);
  });

  it('moves hard links with their target and gives a replaced file\'s links the old bytes', async () => {
    const base = tree({ 'bin/perl': file('old perl') });
    base.set('bin/perl5', { type: 'hardlink', target: 'bin/perl' });
    applyTree(base, tree({ 'bin/perl': file('new perl') }), 'up');
    expect(await text(base, 'bin/perl')).toBe('new perl');
    expect(await text(base, 'bin/perl5')).toBe('old perl');
  });
});

describe('applyLayer (OCI whiteouts)', () => {
  const lower = () =>
    tree({
      'etc/a': file('a'),
      'etc/b': file('b'),
      'opt/d/x': file('x'),
      'opt/d/sub/y': file('y'),
      'opt/keep': file('k'),
    });

  it('.wh.NAME deletes NAME (a file or a whole directory) from the layers below', () => {
    const base = lower();
    applyLayer(base, tree({ 'etc/.wh.a': file(''), 'opt/.wh.d': file('') }), 'oci:x layer 2/2');
    expect(base.paths()).toEqual(['', 'etc', 'etc/b', 'opt', 'opt/keep']);
  });

  it('.wh..wh..opq hides the lower directory\'s contents but keeps the layer\'s own, whatever the order', () => {
    const base = lower();
    const layer = new FileTree();
    layer.set('opt/d/new', file('new')); // before the marker in the tar, still kept
    layer.set('opt/d/.wh..wh..opq', file(''));
    applyLayer(base, layer, 'l');
    expect(base.paths().filter((p) => p.startsWith('opt'))).toEqual(['opt', 'opt/d', 'opt/d/new', 'opt/keep']);
  });

  it('whiteouts never reach the image, and a whiteout cannot name . or ..', () => {
    const base = lower();
    applyLayer(base, tree({ 'etc/.wh.zzz': file('') }), 'l');
    expect(base.paths().some((p) => p.includes('.wh.'))).toBe(false);
    expect(() => applyLayer(lower(), tree({ 'etc/.wh...': file('') }), 'oci:r layer 1/1')).toThrow(/oci:r layer 1\/1: invalid whiteout/);
  });

  it('a whiteout of a hard-linked file leaves its other links with the bytes', async () => {
    const base = lower();
    base.set('opt/hard', { type: 'hardlink', target: 'etc/a' });
    applyLayer(base, tree({ 'etc/.wh.a': file('') }), 'l');
    expect(base.has('etc/a')).toBe(false);
    expect(await text(base, 'opt/hard')).toBe('a');
  });

  it('property: deleting then re-adding gives exactly the layer\'s version', async () => {
    const name = fc.constantFrom('a', 'b', 'c');
    await fc.assert(
      fc.asyncProperty(fc.uniqueArray(name, { minLength: 1 }), fc.uniqueArray(name), async (removed, added) => {
        const base = tree({ 'd/a': file('1a'), 'd/b': file('1b'), 'd/c': file('1c') });
        const layer = new FileTree();
        for (const r of removed) layer.set(`d/.wh.${r}`, file(''));
        for (const a of added) layer.set(`d/${a}`, file(`2${a}`));
        applyLayer(base, layer, 'l');
        for (const n of ['a', 'b', 'c'] as const) {
          if (added.includes(n)) expect(await text(base, `d/${n}`)).toBe(`2${n}`);
          else if (removed.includes(n)) expect(base.has(`d/${n}`)).toBe(false);
          else expect(await text(base, `d/${n}`)).toBe(`1${n}`);
        }
      }),
      { numRuns: 50 },
    );
  });
});

async function packTar(entries: { name: string; type?: 'file' | 'symlink' | 'directory' | 'character-device'; linkname?: string; content?: string; mode?: number; uid?: number; gid?: number; devmajor?: number; pax?: Record<string, string> }[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = { name: e.name, type, mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644), uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: new Date(0), ...(e.linkname ? { linkname: e.linkname } : {}), ...(e.devmajor !== undefined ? { devmajor: e.devmajor, devminor: 1 } : {}), ...(e.pax ? { pax: e.pax } : {}) };
    await new Promise<void>((res, rej) => (type === 'file' ? pack.entry(header, e.content ?? '', (err) => (err ? rej(err) : res())) : pack.entry(header, (err) => (err ? rej(err) : res()))));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

describe('archives: entries through symlinks', () => {
  it('refuses an entry under a symlink the same archive made (tar-slip), naming input and entry', async () => {
    const bytes = await packTar([{ name: 'evil', type: 'symlink', linkname: '/etc' }, { name: 'evil/passwd', content: 'root::0:0' }]);
    const err = await readArchive(bytes, 'tar:/x/evil.tar').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/^tar:\/x\/evil\.tar: archive entry "evil\/passwd" lies under the symlink "evil" \(-> "\/etc"\)/);
  });

  it('allows a directory entry to replace a symlink of the same name', async () => {
    const bytes = await packTar([{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'a', type: 'directory' }, { name: 'a/f', content: 'f' }]);
    const t = await readArchive(bytes, 't');
    expect(t.get('a')?.type).toBe('dir');
    expect(await text(t, 'a/f')).toBe('f');
  });

  it('the same through loadInput for a tar: input, with nothing written anywhere', async () => {
    const tar = join(work, 'slip.tar');
    await writeFile(tar, await packTar([{ name: 'x', type: 'symlink', linkname: '../../../../tmp' }, { name: 'x/owned', content: 'p' }]));
    await expect(loadInput({ tar } as Input, { cacheDir: join(work, 'cache') })).rejects.toThrow(new RegExp(`tar:${tar}: archive entry "x/owned" lies under the symlink "x"`));
  });
});

describe('allow: devices, xattrs, setuid', () => {
  const special = async () =>
    packTar([
      { name: 'dev/console', type: 'character-device', mode: 0o600, devmajor: 5 },
      { name: 'bin/su', content: 'su', mode: 0o4755 },
      { name: 'bin/wall', content: 'wall', mode: 0o2755, gid: 5 },
      { name: 'home/u/tool', content: 't', mode: 0o4755, uid: 1000 },
      { name: 'bin/ping', content: 'p', mode: 0o755, pax: { 'LIBARCHIVE.xattr.security.capability': Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]).toString('base64') } },
      { name: 'tmp', type: 'directory', mode: 0o1777 },
    ]);

  it('by default drops devices and xattrs, keeps root setuid, clears setuid of non-root files, keeps the sticky bit', async () => {
    const tar = join(work, 'special.tar');
    await writeFile(tar, await special());
    const lines: string[] = [];
    const r = await loadInput({ tar } as Input, { cacheDir: join(work, 'cache'), log: (l) => lines.push(l) });
    expect(r.tree.has('dev/console')).toBe(false);
    expect(r.tree.get('bin/su')).toMatchObject({ mode: 0o4755 });
    expect(r.tree.get('bin/wall')).toMatchObject({ mode: 0o755 });
    expect(r.tree.get('home/u/tool')).toMatchObject({ mode: 0o755 });
    const ping = r.tree.get('bin/ping');
    expect(ping?.type === 'file' && ping.xattrs).toBeFalsy();
    expect(r.tree.get('tmp')).toMatchObject({ mode: 0o1777 });
    expect(lines.join('\n')).toMatch(/dropped 1 device node\(s\).*dev\/console/);
    expect(lines.join('\n')).toMatch(/stripped extended attributes from 1 .*bin\/ping/);
  });

  it('keeps them when the profile allows, and strips every setuid bit when it does not', async () => {
    const tar = join(work, 'special2.tar');
    await writeFile(tar, await special());
    const yes = await loadInput({ tar, allow: { devices: true, xattrs: true } } as Input, { cacheDir: join(work, 'cache') });
    expect(yes.tree.get('dev/console')).toMatchObject({ type: 'char', major: 5, minor: 1 });
    const ping = yes.tree.get('bin/ping');
    expect(ping?.type === 'file' && ping.xattrs?.['security.capability']).toEqual(Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0]));
    const no = await loadInput({ tar, allow: { setuid: false } } as Input, { cacheDir: join(work, 'cache') });
    expect(no.tree.get('bin/su')).toMatchObject({ mode: 0o755 });
  });

  it('applies to dir: inputs too (a device node on the host stays out)', () => {
    const t = tree({ 'dev/null': { type: 'char', ...meta, major: 1, minor: 3 }, 'etc/x': file('x') });
    const { report } = applyAllow(t, undefined);
    expect(report.devices).toEqual(['dev/null']);
    expect(t.paths()).toEqual(['', 'dev', 'etc', 'etc/x']);
  });
});

describe('files: inputs', () => {
  it('writes content, host files, symlinks and directories with profile modes and owners', async () => {
    requireTool('tar', 'tar');
    const src = join(work, 'tool.sh');
    await writeFile(src, '#!/bin/sh\necho hi\n');
    await chmod(src, 0o700);
    const r = await loadInput(
      {
        files: [
          { path: '/etc/hostname', content: 'box\n' },
          { path: 'usr/bin/tool', source: src },
          { path: 'etc/shadow', content: 'root:*:1::::::\n', mode: '0640', owner: '0:42' },
          { path: 'etc/localtime', symlink: '/usr/share/zoneinfo/UTC' },
          { path: 'var/lib/app', directory: true, mode: '0700', owner: '1000:1000' },
        ],
        target: 'x',
      } as Input,
      { cacheDir: join(work, 'cache') },
    );
    expect(r.tree.get('x/etc/hostname')).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0 });
    expect(await text(r.tree, 'x/etc/hostname')).toBe('box\n');
    expect(r.tree.get('x/usr/bin/tool')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(await text(r.tree, 'x/usr/bin/tool')).toBe('#!/bin/sh\necho hi\n');
    expect(r.tree.get('x/etc/shadow')).toMatchObject({ mode: 0o640, gid: 42 });
    expect(r.tree.get('x/etc/localtime')).toMatchObject({ type: 'symlink', target: '/usr/share/zoneinfo/UTC' });
    expect(r.tree.get('x/var/lib/app')).toMatchObject({ type: 'dir', mode: 0o700, uid: 1000, gid: 1000 });
  });

  it('names the entry when a source is missing or a path escapes', async () => {
    await expect(loadInput({ files: [{ path: 'a', source: join(work, 'nope') }] } as Input, { cacheDir: work })).rejects.toThrow(/files:\[a\]: files\[0\] \(a\): cannot read .*nope: no such file/);
    await expect(loadInput({ files: [{ path: '../a', content: '' }] } as Input, { cacheDir: work })).rejects.toThrow(/files\[0\] \(\.\.\/a\).*would escape/);
  });
});

describe('input errors name the input', () => {
  it('a missing tar, a corrupt tar, an unknown package', async () => {
    const ctx = { cacheDir: join(work, 'cache') };
    await expect(loadInput({ tar: join(work, 'missing.tar.gz') } as Input, ctx)).rejects.toThrow(new RegExp(`tar:${work}/missing\\.tar\\.gz: cannot read the archive: no such file`));
    const bad = join(work, 'bad.tar.gz');
    requireTool('gzip', 'gzip');
    await writeFile(join(work, 'bad.txt'), 'this is not a tar archive at all'.repeat(40));
    runOk('gzip', ['-kf', join(work, 'bad.txt')]);
    await writeFile(bad, await readFile(join(work, 'bad.txt.gz')));
    await expect(loadInput({ tar: bad } as Input, ctx)).rejects.toThrow(new RegExp(`tar:${bad}`));
    await expect(loadInput({ deb: ['busybox-static', 'ossify-no-such-pkg'], depends: false } as Input, ctx)).rejects.toThrow(/deb: unknown package "ossify-no-such-pkg"/);
  });
});
