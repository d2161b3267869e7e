import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { loadInput } from '../../builder/inputs/index.ts';
import { zstdCompress } from '../../builder/inputs/zstd.ts';
import { findKernel, readKernelConfig, readModinfo, resolveModules, type KernelInfo } from '../../builder/kernel/index.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { bytesContent, readContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

const CACHE = fileURLToPath(new URL('../../out/test-cache', import.meta.url));
const DEFINITION = fileURLToPath(new URL('../../kernel/debian-12-cloud-amd64.yaml', import.meta.url));

let kernelTree: FileTree;
let kernel: KernelInfo;
let config: Map<string, string>;
let work: string;
let defaultModules: string[];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ossify-kernel-'));
  const def = parseYaml(await readFile(DEFINITION, 'utf8')) as { input: Input; modules: string[] };
  defaultModules = def.modules;
  kernelTree = (await loadInput(def.input, { cacheDir: CACHE })).tree;
  kernel = findKernel(kernelTree);
  config = (await readKernelConfig(kernelTree, kernel))!;
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 0 };
async function fileBytes(tree: FileTree, path: string): Promise<Uint8Array> {
  const e = tree.resolve(path);
  if (e?.type !== 'file') throw new Error(`${path} is not a file`);
  return readContent(e.content);
}

const file = (text: string) => ({ type: 'file' as const, ...meta, content: bytesContent(Buffer.from(text)) });

describe('findKernel', () => {
  it('finds the Debian cloud kernel, its modules and config', async () => {
    expect(kernel.version).toMatch(/^6\.1\.0-\d+-cloud-amd64$/);
    expect(kernel.vmlinuzPath).toBe(`boot/vmlinuz-${kernel.version}`);
    expect(kernel.modulesDir).toBe(`lib/modules/${kernel.version}`);
    expect(kernel.configPath).toBe(`boot/config-${kernel.version}`);
    const bz = await readContent(kernel.vmlinuz);
    expect(bz.length).toBeGreaterThan(5_000_000);
    // a bzImage: "HdrS" setup header magic at 0x202
    expect(Buffer.from(bz.subarray(0x202, 0x206)).toString('latin1')).toBe('HdrS');
  });

  it('accepts the merged-/usr layout with lib -> usr/lib and vmlinuz inside the module dir', () => {
    const t = new FileTree();
    t.set('lib', { type: 'symlink', ...meta, mode: 0o777, target: 'usr/lib' });
    t.set('usr/lib/modules/6.9.0-test/vmlinuz', file('kernel'));
    t.set('usr/lib/modules/6.9.0-test/kernel/fs/x.ko', file('x'));
    const k = findKernel(t);
    expect(k).toMatchObject({ version: '6.9.0-test', vmlinuzPath: 'usr/lib/modules/6.9.0-test/vmlinuz', modulesDir: 'usr/lib/modules/6.9.0-test' });
  });

  it('follows a vmlinuz symlink to the image', () => {
    const t = new FileTree();
    t.set('boot/vmlinuz-6.9.0-a', { type: 'symlink', ...meta, target: '/boot/real' });
    t.set('boot/real', file('kernel'));
    expect(findKernel(t).vmlinuzPath).toBe('boot/real');
  });

  it('says so when there is no kernel, or several', () => {
    expect(() => findKernel(new FileTree())).toThrow(InputError);
    expect(() => findKernel(new FileTree())).toThrow(/no kernel/);
    const t = new FileTree();
    t.set('boot/vmlinuz-6.1.0-1-amd64', file('a'));
    t.set('boot/vmlinuz-6.1.0-2-amd64', file('b'));
    expect(() => findKernel(t)).toThrow(/several kernels.*6\.1\.0-1-amd64, 6\.1\.0-2-amd64/);
  });
});

describe('the real kernel: what is built in, what is a module', () => {
  it('has the default modules as loadable modules, none built in', async () => {
    const builtin = new TextDecoder().decode(await fileBytes(kernelTree, `${kernel.modulesDir}/modules.builtin`));
    for (const m of ['squashfs', 'virtio_blk', 'virtio_pci', 'vfat', 'fat', 'nls_cp437', 'nls_ascii', 'nls_iso8859-1', 'nls_utf8']) {
      expect(builtin).not.toMatch(new RegExp(`/${m}\\.ko$`, 'm'));
    }
    expect(config.get('CONFIG_SQUASHFS')).toBe('m');
    expect(config.get('CONFIG_VIRTIO_BLK')).toBe('m');
    expect(config.get('CONFIG_VIRTIO_PCI')).toBe('m');
    expect(config.get('CONFIG_VFAT_FS')).toBe('m');
    expect(config.get('CONFIG_EXT4_FS')).toBe('y');
    expect(builtin).toMatch(/\/binfmt_script\.ko$/m);
  });

  it('defaults vfat to codepage 437 and iocharset ascii, and the default list carries both', () => {
    expect(config.get('CONFIG_FAT_DEFAULT_CODEPAGE')).toBe('437');
    expect(config.get('CONFIG_FAT_DEFAULT_IOCHARSET')).toBe('ascii');
    expect(defaultModules).toEqual(expect.arrayContaining(['nls_cp437', 'nls_ascii']));
  });

  it('supports every squashfs compressor and gzip + zstd initramfs', () => {
    const squashfs = ['ZLIB', 'LZ4', 'LZO', 'XZ', 'ZSTD'].filter((c) => config.get(`CONFIG_SQUASHFS_${c}`) === 'y');
    expect(squashfs).toEqual(['ZLIB', 'LZ4', 'LZO', 'XZ', 'ZSTD']);
    const rd = ['GZIP', 'BZIP2', 'LZMA', 'XZ', 'LZO', 'LZ4', 'ZSTD'].filter((c) => config.get(`CONFIG_RD_${c}`) === 'y');
    expect(rd).toEqual(['GZIP', 'BZIP2', 'LZMA', 'XZ', 'LZO', 'LZ4', 'ZSTD']);
    // squashfs needs no decompressor modules: the libraries are built in
    expect(['ZLIB_INFLATE', 'LZ4_DECOMPRESS', 'XZ_DEC', 'ZSTD_DECOMPRESS'].map((c) => config.get(`CONFIG_${c}`))).toEqual(['y', 'y', 'y', 'y']);
  });
});

describe('resolveModules', () => {
  it('plans the default list dependencies-first, deterministically', async () => {
    const plan = await resolveModules(kernelTree, kernel.version, defaultModules);
    expect(plan.builtin).toEqual([]);
    expect(plan.modules.map((m) => m.name)).toEqual([
      'squashfs',
      'virtio_ring', 'virtio', 'virtio_blk',
      'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci',
      'fat', 'vfat',
      'nls_cp437', 'nls_ascii', 'nls_iso8859_1', 'nls_utf8',
    ]);
    expect(plan.modules.find((m) => m.name === 'nls_iso8859_1')?.path).toBe(`lib/modules/${kernel.version}/kernel/fs/nls/nls_iso8859-1.ko`);
    const again = await resolveModules(kernelTree, kernel.version, defaultModules);
    expect(again.modules.map((m) => m.path)).toEqual(plan.modules.map((m) => m.path));
  });

  it('reads the same depends= as modinfo, for every module of the kernel', async () => {
    requireTool('modinfo', 'kmod');
    const prefix = `${kernel.modulesDir}/kernel/`;
    const files: string[] = [];
    const ours: string[] = [];
    for (const [p, e] of kernelTree.walk()) {
      if (!p.startsWith(prefix) || !p.endsWith('.ko') || e.type !== 'file') continue;
      const bytes = await readContent(e.content);
      const out = join(work, 'mods', p);
      await mkdir(dirname(out), { recursive: true });
      await writeFile(out, bytes);
      files.push(out);
      ours.push(readModinfo(bytes).get('depends')?.[0] ?? '');
    }
    expect(files.length).toBeGreaterThan(1000);
    const theirs = runOk('modinfo', ['-F', 'depends', ...files]).split('\n').slice(0, files.length);
    expect(ours).toEqual(theirs);
  });

  it('closes over dependencies: dm-verity brings dm-mod, dm-bufio and reed_solomon first', async () => {
    const plan = await resolveModules(kernelTree, kernel.version, ['dm-verity', 'vfat']);
    expect(plan.modules.map((m) => m.name)).toEqual(['dm_mod', 'dm_bufio', 'reed_solomon', 'dm_verity', 'fat', 'vfat']);
    const seen = new Set<string>();
    for (const m of plan.modules) {
      for (const d of m.depends) expect(seen.has(d)).toBe(true);
      seen.add(m.name);
    }
  });

  it('agrees with modinfo on the closure of the default list', async () => {
    requireTool('modinfo', 'kmod');
    const plan = await resolveModules(kernelTree, kernel.version, [...defaultModules, 'dm_verity', 'btrfs']);
    for (const m of plan.modules) {
      const out = join(work, 'closure', m.path);
      await mkdir(dirname(out), { recursive: true });
      await writeFile(out, await readContent(m.content));
      const theirs = runOk('modinfo', ['-F', 'depends', out]).trim().split(',').filter(Boolean).map((d) => d.replace(/-/g, '_'));
      expect(m.depends.sort()).toEqual(theirs.sort());
    }
  });

  it('skips built-in modules and reports them', async () => {
    const plan = await resolveModules(kernelTree, kernel.version, ['ext4', 'squashfs']);
    expect(plan.builtin).toEqual(['ext4']);
    expect(plan.modules.map((m) => m.name)).toEqual(['squashfs']);
  });

  it('lists close matches for an unknown module', async () => {
    const err = await resolveModules(kernelTree, kernel.version, ['squashfss']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/no module named "squashfss" \(close matches: squashfs/);
    await expect(resolveModules(kernelTree, kernel.version, ['virtio-blk'])).resolves.toMatchObject({ modules: [{ name: 'virtio_ring' }, { name: 'virtio' }, { name: 'virtio_blk' }] });
  });

  it('decompresses .ko.xz / .ko.zst / .ko.gz modules for the initramfs', async () => {
    requireTool('xz', 'xz-utils');
    const v = kernel.version;
    const t = new FileTree();
    const base = `lib/modules/${v}/kernel/fs/fat`;
    const fat = await fileBytes(kernelTree, `${base}/fat.ko`);
    const vfat = await fileBytes(kernelTree, `${base}/vfat.ko`);
    const squash = await fileBytes(kernelTree, `lib/modules/${v}/kernel/fs/squashfs/squashfs.ko`);
    const xzFile = join(work, 'vfat.ko');
    await writeFile(xzFile, vfat);
    runOk('xz', ['-kf', '--check=crc32', xzFile]);
    const { gzipSync } = await import('node:zlib');
    t.set(`${base}/vfat.ko.xz`, { type: 'file', ...meta, content: bytesContent(await readFile(`${xzFile}.xz`)) });
    t.set(`${base}/fat.ko.zst`, { type: 'file', ...meta, content: bytesContent(await zstdCompress(fat, 3)) });
    t.set(`lib/modules/${v}/kernel/fs/squashfs/squashfs.ko.gz`, { type: 'file', ...meta, content: bytesContent(gzipSync(squash)) });
    const plan = await resolveModules(t, v, ['vfat', 'squashfs']);
    expect(plan.modules.map((m) => m.path)).toEqual([`${base}/fat.ko`, `${base}/vfat.ko`, `lib/modules/${v}/kernel/fs/squashfs/squashfs.ko`]);
    expect(Buffer.compare(await readContent(plan.modules[1]!.content), vfat)).toBe(0);
    expect(Buffer.compare(await readContent(plan.modules[0]!.content), fat)).toBe(0);
    expect(Buffer.compare(await readContent(plan.modules[2]!.content), squash)).toBe(0);
  });

  it('refuses a module built for another kernel', async () => {
    const t = new FileTree();
    const squash = await fileBytes(kernelTree, `${kernel.modulesDir}/kernel/fs/squashfs/squashfs.ko`);
    t.set('lib/modules/6.9.9-other/kernel/fs/squashfs/squashfs.ko', { type: 'file', ...meta, content: bytesContent(squash) });
    await expect(resolveModules(t, '6.9.9-other', ['squashfs'])).rejects.toThrow(/built for kernel "6\.1\.0/);
  });
});
