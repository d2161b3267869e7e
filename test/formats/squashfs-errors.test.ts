import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Command, CommanderError } from 'commander';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerInspectCommand } from '../../builder/commands/inspect.ts';
import { registerSquashfsCommand } from '../../builder/commands/squashfs.ts';
import { writeSquashfs } from '../../builder/formats/squashfs/index.ts';
import { SquashfsReader } from '../../builder/formats/squashfs/reader.ts';
import { bytesContent, hostFileContent, type Content } from '../../builder/tree/content.ts';
import { loadTreeFromHost } from '../../builder/tree/from-host.ts';
import { FileTree, type Entry } from '../../builder/tree/tree.ts';
import { InputError, OssifyError } from '../../builder/util/errors.ts';
import { requireSquashfsOracles } from '../helpers/squashfs.ts';
import { runOk } from '../helpers/oracle.ts';

const m = { mode: 0o644, uid: 0, gid: 0, mtime: 1_700_000_000 };
const file = (data: string | Uint8Array): Entry => ({ type: 'file', ...m, content: bytesContent(typeof data === 'string' ? new TextEncoder().encode(data) : data) });

/** A content whose actual bytes disagree with its declared size, as a file changing under us. */
function lyingContent(size: number, actual: number): Content {
  return {
    size,
    origin: '/host/growing.log',
    async *stream() {
      yield new Uint8Array(actual);
    },
  };
}

/** The real CLI in a child process (slow to start from source: used once). */
function cliProcess(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', resolve('builder/cli.ts'), ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The same commands in-process, with the CLI's exit-code mapping (0 ok, 1 failed, 2 bad input). */
async function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const program = new Command('ossify').exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  registerSquashfsCommand(program);
  registerInspectCommand(program);
  for (const c of program.commands) c.exitOverride().configureOutput({ writeErr: () => {}, writeOut: () => {} });
  const saved = { ...process.env };
  Object.assign(process.env, env);
  let stdout = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(['node', 'ossify', ...args]);
    return { code: 0, stdout, stderr: '' };
  } catch (e) {
    const code = e instanceof OssifyError ? e.exitCode : e instanceof CommanderError ? (e.exitCode === 0 ? 0 : 2) : 1;
    return { code, stdout, stderr: `error: ${(e as Error).message}\n` };
  } finally {
    process.stdout.write = write;
    for (const k of Object.keys(env)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

describe('squashfs: bad input fails clearly and leaves no image behind', () => {
  let work: string;
  beforeAll(async () => {
    requireSquashfsOracles();
    work = await mkdtemp(join(tmpdir(), 'ossify-sqfs-err-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  async function expectNoImage(dir: string, name: string, before?: string) {
    const left = (await readdir(dir)).filter((f) => f.includes(name) && f !== name);
    expect(left, 'temporary files left behind').toEqual([]);
    if (before === undefined) expect((await readdir(dir)).includes(name)).toBe(false);
    else expect(await readFile(join(dir, name), 'utf8')).toBe(before);
  }

  const cases: [string, () => FileTree, typeof InputError | typeof OssifyError, RegExp][] = [
    ['a name longer than 256 bytes', () => { const t = new FileTree(); t.set('x'.repeat(257), file('a')); return t; }, InputError, /257 bytes/],
    ['a hard link to nothing', () => { const t = new FileTree(); t.set('l', { type: 'hardlink', target: 'missing' }); return t; }, InputError, /not in the tree/],
    ['a hard link to a directory', () => { const t = new FileTree(); t.ensureDir('d'); t.set('l', { type: 'hardlink', target: 'd' }); return t; }, InputError, /directory/],
    ['a uid beyond 32 bits', () => { const t = new FileTree(); t.set('f', { ...file('a'), uid: 2 ** 32 } as Entry); return t; }, InputError, /uid/],
    ['a negative mtime', () => { const t = new FileTree(); t.set('f', { ...file('a'), mtime: -1 } as Entry); return t; }, InputError, /mtime/],
    ['an xattr squashfs cannot store', () => { const t = new FileTree(); t.set('f', { ...file('a'), xattrs: { 'system.posix_acl_access': new Uint8Array(4) } } as Entry); return t; }, InputError, /system\.posix_acl_access/],
    ['a file that grows while read', () => { const t = new FileTree(); t.set('big', { type: 'file', ...m, content: lyingContent(10, 300_000) }); return t; }, OssifyError, /changed while being read/],
    ['a file that shrinks while read', () => { const t = new FileTree(); t.set('big', { type: 'file', ...m, content: lyingContent(300_000, 10) }); return t; }, OssifyError, /changed while being read/],
    ['an empty symlink target', () => { const t = new FileTree(); t.set('s', { type: 'symlink', ...m, target: '' }); return t; }, InputError, /empty target/],
  ];
  for (const [what, make, cls, msg] of cases) {
    it(`refuses ${what}`, async () => {
      const dir = await mkdtemp(join(work, 'case-'));
      await writeFile(join(dir, 'img.sqfs'), 'previous image');
      const err = await writeSquashfs(make(), join(dir, 'img.sqfs'), { compression: 'zstd', threads: 2 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      expect((err as Error).message).toMatch(msg);
      await expectNoImage(dir, 'img.sqfs', 'previous image');
    });
  }

  it('names with NUL or / cannot enter a tree at all', () => {
    const t = new FileTree();
    expect(() => t.set('a\0b', file('x'))).toThrow(InputError);
    t.set('a/b', file('x'));
    expect(t.get('a')?.type).toBe('dir');
  });

  it('bad options are input errors', async () => {
    const t = new FileTree();
    for (const o of [{ blockSize: 3000 }, { blockSize: 2 << 20 }, { level: 0 }, { level: 23 }, { threads: 0 }, { noFragments: true, alwaysFragments: true }, { mkfsTime: -5 }]) {
      await expect(writeSquashfs(t, join(work, 'opt.sqfs'), { compression: 'zstd', ...o })).rejects.toBeInstanceOf(InputError);
    }
    await expect(writeSquashfs(t, join(work, 'opt.sqfs'), { compression: 'lz5' as 'zstd' })).rejects.toBeInstanceOf(InputError);
    const lz4 = writeSquashfs(t, join(work, 'opt.sqfs'), { compression: 'lz4' as 'zstd' });
    await expect(lz4).rejects.toBeInstanceOf(InputError);
    await expect(lz4).rejects.toThrow('lz4 is not supported');
  });

  it('a host file that vanishes before it is read fails the write', async () => {
    const src = await mkdtemp(join(work, 'src-'));
    await writeFile(join(src, 'a'), 'x'.repeat(200_000));
    await writeFile(join(src, 'b'), 'gone soon');
    const tree = await loadTreeFromHost(src);
    await rm(join(src, 'b'));
    const out = await mkdtemp(join(work, 'out-'));
    const err = await writeSquashfs(tree, join(out, 'img.sqfs'), { compression: 'gzip', threads: 2 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OssifyError);
    expect((err as Error).message).toMatch(/\/b.*(vanished|changed)/);
    await expectNoImage(out, 'img.sqfs');
  });

  it('a host file that changes size between scan and read fails the write', async () => {
    const src = await mkdtemp(join(work, 'src-'));
    await writeFile(join(src, 'log'), 'short');
    const tree = await loadTreeFromHost(src);
    await writeFile(join(src, 'log'), 'much longer than before');
    const out = await mkdtemp(join(work, 'out-'));
    await expect(writeSquashfs(tree, join(out, 'img.sqfs'), { compression: 'gzip' })).rejects.toThrow(/changed while being read/);
    await expectNoImage(out, 'img.sqfs');
    // hostFileContent itself is what notices.
    const c = hostFileContent(join(src, 'log'), 5);
    await expect((async () => { for await (const _ of c.stream()); })()).rejects.toThrow(/changed/);
  });

  describe('ossify squashfs / inspect commands', () => {
    it('exit 2 for a path that is not a directory, a bad compressor or block size', async () => {
      const f = join(work, 'plain.txt');
      await writeFile(f, 'x');
      const real = cliProcess(['squashfs', f, '-o', join(work, 'c0.sqfs')]);
      expect(real.code, real.stderr).toBe(2);
      expect(real.stderr).toMatch(/^error: .*is not a directory/m);
      for (const args of [
        ['squashfs', f, '-o', join(work, 'c1.sqfs')],
        ['squashfs', join(work, 'does-not-exist'), '-o', join(work, 'c2.sqfs')],
        ['squashfs', work, '-o', join(work, 'c3.sqfs'), '--comp', 'lz5'],
        ['squashfs', work, '-o', join(work, 'c4.sqfs'), '--block-size', '1000'],
        ['squashfs', work, '-o', join(work, 'c5.sqfs'), '--level', 'high'],
        ['inspect', f],
      ]) {
        const r = await cli(args);
        expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(2);
        expect(r.stderr).toMatch(/^error: /m);
      }
      expect((await readdir(work)).filter((n) => n.startsWith('c') && n.endsWith('.sqfs'))).toEqual([]);
    });

    it('exit 2 for a file name that is not UTF-8', async () => {
      const src = await mkdtemp(join(work, 'badname-'));
      await writeFile(Buffer.concat([Buffer.from(`${src}/`), Buffer.from([0x66, 0xff, 0x6f])]), 'x');
      const r = await cli(['squashfs', src, '-o', join(work, 'bad.sqfs')]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/not valid UTF-8/);
    });

    it('normalises with SOURCE_DATE_EPOCH: two copies with different mtimes give the same bytes', async () => {
      const a = await mkdtemp(join(work, 'tree-a-'));
      const b = await mkdtemp(join(work, 'tree-b-'));
      for (const [d, t] of [[a, 1000], [b, 2_000_000]] as const) {
        await mkdir(join(d, 'etc'));
        await writeFile(join(d, 'etc', 'os-release'), 'NAME=ossify\n');
        await symlink('etc/os-release', join(d, 'os-release'));
        await utimes(join(d, 'etc', 'os-release'), t, t);
      }
      const outs = [join(work, 'sde-a.sqfs'), join(work, 'sde-b.sqfs')];
      const r1 = await cli(['squashfs', a, '-o', outs[0]!, '--all-root', '--json'], { SOURCE_DATE_EPOCH: '1700000000' });
      const r2 = await cli(['squashfs', b, '-o', outs[1]!, '--all-root', '--json', '--threads', '1'], { SOURCE_DATE_EPOCH: '1700000000' });
      expect(r1.code, r1.stderr).toBe(0);
      expect(r2.code, r2.stderr).toBe(0);
      const j1 = JSON.parse(r1.stdout) as { sha256: string; mkfsTime: number; inodes: number };
      const j2 = JSON.parse(r2.stdout) as { sha256: string };
      expect(j1.sha256).toBe(j2.sha256);
      expect(j1.mkfsTime).toBe(1700000000);
      expect(j1.inodes).toBe(4);
      expect(await readFile(outs[0]!)).toEqual(await readFile(outs[1]!));
      expect(runOk('unsquashfs', ['-lln', outs[0]!], { env: { ...process.env, TZ: 'UTC' } })).toContain('0/0                      12 2023-11-14 22:13 squashfs-root/etc/os-release');

      // inspect lists it like unsquashfs does, and as JSON.
      const ins = await cli(['inspect', outs[0]!]);
      expect(ins.code).toBe(0);
      const want = runOk('unsquashfs', ['-lln', outs[0]!], { env: { ...process.env, TZ: 'UTC' } })
        .split('\n')
        .filter((l) => l.includes('squashfs-root'));
      expect(ins.stdout.trim().split('\n')).toEqual(want);
      const js = JSON.parse((await cli(['inspect', outs[0]!, '--json'])).stdout) as { superblock: { compression: string }; entries: { path: string; type: string; target?: string }[] };
      expect(js.superblock.compression).toBe('zstd');
      expect(js.entries.find((e) => e.path === '/os-release')).toMatchObject({ type: 'symlink', target: 'etc/os-release' });
    });
  });

  it('the reader rejects what is not squashfs', async () => {
    const f = join(work, 'junk.bin');
    await writeFile(f, Buffer.alloc(200, 7));
    await expect(SquashfsReader.open(f)).rejects.toThrow(/not a squashfs image/);
  });
});
