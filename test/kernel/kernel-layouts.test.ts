import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadInput } from '../../builder/inputs/index.ts';
import { zstdCompress } from '../../builder/inputs/zstd.ts';
import { bzImageVersion, findKernel, loadKernel, resolveModules, type KernelInfo } from '../../builder/kernel/index.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { bytesContent, readContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

const CACHE = fileURLToPath(new URL('../../out/test-cache', import.meta.url));
const meta = { mode: 0o644, uid: 0, gid: 0, mtime: 0 };

let debian: FileTree;
let kernel: KernelInfo;
let vmlinuz: Uint8Array;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ossify-kernel-layouts-'));
  debian = (await loadInput({ deb: 'linux-image-cloud-amd64', depends: ['linux-image-*'] } as Input, { cacheDir: CACHE })).tree;
  kernel = findKernel(debian);
  vmlinuz = await readContent(kernel.vmlinuz);
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

async function bytesAt(tree: FileTree, path: string): Promise<Uint8Array> {
  const e = tree.resolve(path);
  if (e?.type !== 'file') throw new Error(`${path} is not a file`);
  return readContent(e.content);
}

async function tarOf(files: Record<string, Uint8Array>): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const [name, data] of Object.entries(files)) {
    await new Promise<void>((res, rej) => pack.entry({ name, mode: 0o644, mtime: new Date(0) }, Buffer.from(data), (err) => (err ? rej(err) : res())));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

const MODULES = ['fs/squashfs/squashfs.ko', 'fs/fat/fat.ko', 'fs/fat/vfat.ko', 'drivers/block/virtio_blk.ko', 'drivers/virtio/virtio.ko', 'drivers/virtio/virtio_ring.ko'];

describe('the real kernel image', () => {
  it('says its release in the bzImage header, the name of its module directory', () => {
    expect(bzImageVersion(vmlinuz)).toBe(kernel.version);
    expect(bzImageVersion(new Uint8Array(4096))).toBeUndefined();
  });
});

describe('LinuxKit layout: /kernel and /kernel.tar', () => {
  it('is found in a tar input, its modules (xz, zstd, gzip and plain) unpacked and resolved', async () => {
    requireTool('xz', 'xz-utils');
    const v = kernel.version;
    const mods: Record<string, Uint8Array> = {};
    const originals = new Map<string, Uint8Array>();
    for (const [i, m] of MODULES.entries()) {
      const raw = await bytesAt(debian, `lib/modules/${v}/kernel/${m}`);
      originals.set(m, raw);
      const path = `lib/modules/${v}/kernel/${m}`;
      if (i % 4 === 0) mods[path] = raw;
      else if (i % 4 === 1) mods[`${path}.gz`] = gzipSync(raw);
      else if (i % 4 === 2) mods[`${path}.zst`] = await zstdCompress(raw, 3);
      else {
        const f = join(work, `m${i}.ko`);
        await writeFile(f, raw);
        runOk('xz', ['-kf', '--check=crc32', f]);
        mods[`${path}.xz`] = await readFile(`${f}.xz`);
      }
    }
    mods[`lib/modules/${v}/modules.builtin`] = await bytesAt(debian, `lib/modules/${v}/modules.builtin`);
    const image = join(work, 'linuxkit.tar');
    await writeFile(image, await tarOf({ kernel: vmlinuz, 'kernel.tar': await tarOf(mods), 'System.map': Buffer.from('map') }));

    const input = await loadInput({ tar: image } as Input, { cacheDir: CACHE });
    const { tree, kernel: k } = await loadKernel(input.tree, 'tar:linuxkit.tar');
    expect(k).toMatchObject({ version: v, vmlinuzPath: 'kernel', modulesDir: `lib/modules/${v}` });
    const plan = await resolveModules(tree, v, ['vfat', 'virtio_blk', 'squashfs', 'ext4']);
    expect(plan.builtin).toEqual(['ext4']);
    expect(plan.modules.map((m) => m.name)).toEqual(['fat', 'vfat', 'virtio_ring', 'virtio', 'virtio_blk', 'squashfs']);
    for (const m of plan.modules) {
      expect(m.path).toMatch(/\.ko$/);
      const rel = m.path.slice(`lib/modules/${v}/kernel/`.length);
      expect(Buffer.compare(await readContent(m.content), originals.get(rel)!), rel).toBe(0);
    }
  });

  it('without modules, takes the version from the image header', async () => {
    const t = new FileTree();
    t.set('kernel', { type: 'file', ...meta, content: bytesContent(vmlinuz) });
    expect((await loadKernel(t)).kernel).toMatchObject({ version: kernel.version, vmlinuzPath: 'kernel' });
  });
});

describe('Talos-style layout: /boot/vmlinuz and /usr/lib/modules', () => {
  it('takes the version from the one module directory, through lib -> usr/lib', async () => {
    const t = new FileTree();
    t.set('boot/vmlinuz', { type: 'file', ...meta, content: bytesContent(vmlinuz) });
    t.set('lib', { type: 'symlink', ...meta, mode: 0o777, target: 'usr/lib' });
    const sq = await bytesAt(debian, `${kernel.modulesDir}/kernel/fs/squashfs/squashfs.ko`);
    t.set(`usr/lib/modules/${kernel.version}/kernel/fs/squashfs/squashfs.ko.zst`, { type: 'file', ...meta, content: bytesContent(await zstdCompress(sq, 1)) });
    const { kernel: k } = await loadKernel(t);
    expect(k).toMatchObject({ version: kernel.version, vmlinuzPath: 'boot/vmlinuz', modulesDir: `usr/lib/modules/${kernel.version}` });
    const plan = await resolveModules(t, k.version, ['squashfs']);
    expect(plan.modules[0]!.path).toBe(`lib/modules/${kernel.version}/kernel/fs/squashfs/squashfs.ko`);
  });

  it('refuses an image whose release does not match its modules', async () => {
    const t = new FileTree();
    t.set('boot/vmlinuz', { type: 'file', ...meta, content: bytesContent(vmlinuz) });
    t.set('lib/modules/6.9.9-other/modules.builtin', { type: 'file', ...meta, content: bytesContent(new Uint8Array()) });
    const err = await loadKernel(t, 'oci:example/kernel:1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toBe(`oci:example/kernel:1: the kernel image boot/vmlinuz is release ${kernel.version}, but its modules are for 6.9.9-other`);
  });

  it('the Debian layout is still preferred and checked the same way', async () => {
    const { kernel: k } = await loadKernel(debian);
    expect(k.vmlinuzPath).toBe(`boot/vmlinuz-${kernel.version}`);
  });
});
