import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tarStream from 'tar-stream';
import { readAr } from '../../builder/formats/ar.ts';
import { readTar } from '../../builder/tree/from-tar.ts';
import { readContent } from '../../builder/tree/content.ts';
import { dependencyNames, parsePackageSpec } from '../../builder/inputs/apt.ts';
import { parseStanza } from '../../builder/inputs/deb.ts';
import { collect, decompressBytes, sniffCompression } from '../../builder/inputs/decompress.ts';
import { globMatcher } from '../../builder/inputs/glob.ts';
import { zstdCompress, zstdDecompressBytes, zstdFrames } from '../../builder/inputs/zstd.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ossify-inputs-units-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('ar reader', () => {
  it('reads what binutils ar writes, odd sizes and long (GNU) names included', async () => {
    requireTool('ar', 'binutils');
    const files: Record<string, Uint8Array> = {
      'debian-binary': Buffer.from('2.0\n'),
      'odd.bin': Buffer.from('abc'),
      'empty': new Uint8Array(0),
      'a-member-name-longer-than-sixteen-bytes.tar.xz': Buffer.alloc(1001, 9),
    };
    for (const [n, d] of Object.entries(files)) await writeFile(join(work, n), d);
    const archive = join(work, 'test.a');
    runOk('ar', ['rcS', archive, ...Object.keys(files)], { cwd: work });
    const members = readAr(await readFile(archive), archive);
    expect(members.map((m) => m.name)).toEqual(Object.keys(files));
    for (const m of members) expect(Buffer.compare(m.data, files[m.name]!)).toBe(0);
  });

  it('rejects garbage with the origin named', () => {
    expect(() => readAr(Buffer.from('!<arch>\nshort'), 'x.deb')).toThrow(/x\.deb: not a valid ar archive: truncated/);
    expect(() => readAr(Buffer.from('nope'), 'y.deb')).toThrow(/y\.deb.*!<arch>/);
  });
});

describe('glob matcher', () => {
  const cases: [string, string, boolean][] = [
    ['usr/share/doc/**', 'usr/share/doc', true],
    ['usr/share/doc/**', 'usr/share/doc/a/b/c', true],
    ['usr/share/doc/**', 'usr/share/docs', false],
    ['**/*.ko', 'lib/modules/6.1/kernel/fs/fat/fat.ko', true],
    ['**/*.ko', 'fat.ko', true],
    ['**/*.ko', 'fat.ko.xz', false],
    ['lib/*/x', 'lib/a/x', true],
    ['lib/*/x', 'lib/a/b/x', false],
    ['lib/**/x', 'lib/x', true],
    ['lib/**/x', 'lib/a/b/x', true],
    ['/etc/*.conf', 'etc/a.conf', true],
    ['./etc/?.conf', 'etc/a.conf', true],
    ['etc/?.conf', 'etc/ab.conf', false],
    ['a.b', 'aXb', false],
    ['linux-image-*', 'linux-image-6.1.0-56-cloud-amd64', true],
    ['linux-image-*', 'linux-headers-6.1', false],
    ['(x)+[y]', '(x)+[y]', true],
  ];
  for (const [pattern, path, want] of cases) {
    it(`${pattern} ${want ? 'matches' : 'does not match'} ${path}`, () => {
      expect(globMatcher([pattern])(path)).toBe(want);
    });
  }

  it('matches every literal path against itself and ** against everything', () => {
    const seg = fc.stringMatching(/^[A-Za-z0-9._+\-() $^{}]{1,8}$/).filter((s) => s !== '.' && s !== '..');
    fc.assert(
      fc.property(fc.array(seg, { minLength: 1, maxLength: 5 }), (segs) => {
        const path = segs.join('/');
        expect(globMatcher([path])(path)).toBe(true);
        expect(globMatcher(['**'])(path)).toBe(true);
        expect(globMatcher([`${segs[0]}/**`])(path)).toBe(true);
        expect(globMatcher(['*'])(path)).toBe(segs.length === 1);
      }),
    );
  });
});

describe('deb822 and dependencies', () => {
  it('takes the first alternative of each clause, without versions or arch qualifiers', () => {
    const s = parseStanza(
      'Package: linux-image-6.1.0-56-cloud-amd64\nPre-Depends: libc6 (>= 2.34)\nDepends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool,\n python3:any\nDescription: x\n continued\n\nPackage: other\n',
    );
    expect(s['Package']).toBe('linux-image-6.1.0-56-cloud-amd64');
    expect(dependencyNames(s)).toEqual(['libc6', 'kmod', 'linux-base', 'initramfs-tools', 'python3']);
  });

  it('accepts name and name=version specs and nothing else', () => {
    expect(parsePackageSpec('busybox-static')).toEqual({ name: 'busybox-static' });
    expect(parsePackageSpec('busybox-static=1:1.35.0-4+deb12u1+b1')).toEqual({ name: 'busybox-static', version: '1:1.35.0-4+deb12u1+b1' });
    for (const bad of ['-o', 'Foo', 'a', 'x=1=2', 'x=', 'x y', 'x;rm']) expect(() => parsePackageSpec(bad)).toThrow(/not a Debian package name/);
  });
});

describe('decompression', () => {
  it('recognises formats by magic bytes', () => {
    expect(sniffCompression(Buffer.from([0x1f, 0x8b, 8]))).toBe('gzip');
    expect(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))).toBe('zstd');
    expect(sniffCompression(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]))).toBe('xz');
    expect(sniffCompression(Buffer.from('BZh9'))).toBe('bzip2');
    expect(sniffCompression(Buffer.from('ustar'))).toBe('none');
  });

  it('decodes what the host tools write (gzip, xz, bzip2, zstd)', async () => {
    const data = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 7919) % 251));
    const file = join(work, 'data.bin');
    for (const [tool, args, pkg] of [['gzip', ['-kf'], 'gzip'], ['xz', ['-kf'], 'xz-utils'], ['bzip2', ['-kf'], 'bzip2'], ['zstd', ['-qf'], 'zstd']] as const) {
      requireTool(tool, pkg);
      await writeFile(file, data);
      runOk(tool, [...args, file]);
      const ext = { gzip: 'gz', xz: 'xz', bzip2: 'bz2', zstd: 'zst' }[tool];
      const out = await collect(decompressBytes(await readFile(`${file}.${ext}`), tool));
      expect(Buffer.compare(out, data)).toBe(0);
    }
  });

  it('walks zstd frames, skipping skippable frames, and round-trips through the wasm codec', async () => {
    const a = await zstdCompress(Buffer.from('hello '), 3);
    const b = await zstdCompress(Buffer.alloc(500_000, 1), 19);
    const skippable = Buffer.from([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
    const stream = Buffer.concat([a, skippable, b]);
    expect(zstdFrames(stream, 's')).toHaveLength(2);
    const out = await zstdDecompressBytes(stream, 's');
    expect(out.length).toBe(6 + 500_000);
    expect(Buffer.from(out.subarray(0, 6)).toString()).toBe('hello ');
    expect(() => zstdFrames(stream.subarray(0, stream.length - 3), 'cut.zst')).toThrow(/cut\.zst: corrupt zstd data/);
  });

  it('decodes xz in-process: no host xz on PATH is needed', async () => {
    requireTool('xz', 'xz-utils');
    const file = join(work, 'x.txt');
    await writeFile(file, 'x'.repeat(10_000));
    runOk('xz', ['-kf', file]);
    const data = await readFile(`${file}.xz`);
    const path = process.env.PATH;
    process.env.PATH = join(work, 'empty-path');
    try {
      expect(Buffer.from(await collect(decompressBytes(data, 'tar:/some/input.tar.xz'))).toString()).toBe('x'.repeat(10_000));
    } finally {
      process.env.PATH = path;
    }
  });

  it('zstd output of the wasm codec is read by the zstd CLI', async () => {
    requireTool('zstd', 'zstd');
    const data = Buffer.alloc(100_000, 42);
    const file = join(work, 'w.zst');
    await writeFile(file, await zstdCompress(data, 19));
    runOk('zstd', ['-t', '-q', file]);
  });
});

describe('tar reader round trip', () => {
  type Gen = { name: string; kind: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo'; data: Uint8Array; mode: number; target: string };
  const seg = fc.stringMatching(/^[A-Za-z0-9 ._~+\-äöü€日本\u{1F600}]{1,40}$/u).filter((s) => s !== '.' && s !== '..');
  const entry = fc.record({
    name: fc.array(seg, { minLength: 1, maxLength: 6 }).map((a) => a.join('/')),
    kind: fc.constantFrom('file', 'dir', 'symlink', 'hardlink', 'fifo'),
    data: fc.uint8Array({ maxLength: 2000 }),
    mode: fc.integer({ min: 1, max: 0o7777 }), // tar-stream's pack turns mode 0 into its default
    target: fc.string({ minLength: 1, maxLength: 150 }).filter((t) => !t.includes('\0')),
  }) as fc.Arbitrary<Gen>;

  it('reads back what tar-stream packs: names (long, unicode), types, modes, data, links', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(entry, { minLength: 1, maxLength: 25 }), async (entries) => {
        // Later entries must not turn an earlier entry's parent into a file; keep names unique per prefix.
        const used = new Map<string, Gen>();
        for (const e of entries) {
          const parts = e.name.split('/');
          const clash = parts.some((_, i) => used.has(parts.slice(0, i).join('/'))) || [...used.keys()].some((k) => k.startsWith(`${e.name}/`));
          if (!clash && !used.has(e.name)) used.set(e.name, e);
        }
        const pack = tarStream.pack();
        const chunks: Uint8Array[] = [];
        const done = (async () => {
          for await (const c of pack as unknown as AsyncIterable<Uint8Array>) chunks.push(c);
        })();
        const written: Gen[] = [];
        for (const e of used.values()) {
          const base = { name: e.name, mode: e.mode, uid: 0, gid: 0, mtime: new Date(1_000_000_000_000) };
          if (e.kind === 'hardlink') {
            const to = written.find((w) => w.kind === 'file');
            if (!to) continue;
            e.target = to.name;
          }
          await new Promise<void>((resolve, reject) => {
            const cb = (err?: Error | null) => (err ? reject(err) : resolve());
            if (e.kind === 'file') pack.entry({ ...base, type: 'file' }, Buffer.from(e.data), cb);
            else if (e.kind === 'dir') pack.entry({ ...base, type: 'directory' }, cb);
            else if (e.kind === 'symlink') pack.entry({ ...base, type: 'symlink', linkname: e.target }, cb);
            else if (e.kind === 'hardlink') pack.entry({ ...base, type: 'link', linkname: e.target }, cb);
            else pack.entry({ ...base, type: 'fifo' }, cb);
          });
          written.push(e);
        }
        pack.finalize();
        await done;
        const tree = await readTar(Buffer.concat(chunks), { origin: 'prop.tar' });
        for (const e of written) {
          const got = tree.get(e.name);
          if (e.kind === 'hardlink') {
            expect(got).toEqual({ type: 'hardlink', target: e.target });
            continue;
          }
          expect(got?.type).toBe(e.kind);
          if (got?.type === 'hardlink' || !got) throw new Error('unexpected');
          expect(got.mode).toBe(e.mode);
          expect(got.mtime).toBe(1_000_000_000);
          if (got.type === 'file') expect(Buffer.compare(await readContent(got.content), e.data)).toBe(0);
          if (got.type === 'symlink') expect(got.target).toBe(e.target);
        }
      }),
      { numRuns: 60 },
    );
  });
});
