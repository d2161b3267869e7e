import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readCpio } from '../../builder/formats/cpio.ts';
import { buildInitramfs, buildInitramfsTree, checkInitramfsCompression, INIT_SCRIPT, MODULE_LIST_PATH } from '../../builder/initramfs/index.ts';
import { loadInput } from '../../builder/inputs/index.ts';
import { zstdDecompressBytes } from '../../builder/inputs/zstd.ts';
import { findKernel, readKernelConfig, resolveModules, type ModulePlan } from '../../builder/kernel/index.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { readContent, type Content } from '../../builder/tree/content.ts';
import type { FileTree } from '../../builder/tree/tree.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';

const CACHE = fileURLToPath(new URL('../../out/test-cache', import.meta.url));
const ctx = { cacheDir: CACHE };
const MODULES = ['squashfs', 'virtio_blk', 'virtio_pci', 'vfat', 'nls_cp437', 'nls_ascii', 'nls_iso8859_1', 'nls_utf8'];
const EPOCH = 1_700_000_000;

let work: string;
let busybox: Content;
let plan: ModulePlan;
let version: string;
let config: Map<string, string>;
let tree: FileTree;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'ossify-initramfs-'));
  const k = await loadInput({ deb: 'linux-image-cloud-amd64', depends: ['linux-image-*'] } as Input, ctx);
  const kernel = findKernel(k.tree);
  version = kernel.version;
  config = (await readKernelConfig(k.tree, kernel))!;
  plan = await resolveModules(k.tree, version, MODULES);
  const bb = await loadInput({ deb: 'busybox-static', depends: false } as Input, ctx);
  const e = bb.tree.resolve('bin/busybox');
  if (e?.type !== 'file') throw new Error('no busybox');
  busybox = e.content;
  tree = buildInitramfsTree({ busybox, modules: plan, kernelVersion: version, epoch: EPOCH });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('initramfs tree', () => {
  it('holds busybox, /init, the module list, the modules and a console node, all root-owned at the epoch', async () => {
    const paths = tree.paths();
    for (const p of ['bin/busybox', 'init', MODULE_LIST_PATH, 'dev/console', 'proc', 'sys', 'newroot']) expect(paths).toContain(p);
    // no shell to fall back to: the kernel would run /bin/sh if /init failed
    expect(paths).not.toContain('bin/sh');
    expect(tree.get('init')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(tree.get('bin/busybox')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(tree.get('dev/console')).toMatchObject({ type: 'char', major: 5, minor: 1, mode: 0o600 });
    for (const [, e] of tree.walk()) {
      if (e.type !== 'hardlink') expect(e).toMatchObject({ uid: 0, gid: 0, mtime: EPOCH });
    }
    const list = new TextDecoder().decode(await readContent((tree.get(MODULE_LIST_PATH) as { content: Content }).content));
    expect(list.split('\n').filter(Boolean)).toEqual(plan.modules.map((m) => `/${m.path}`));
    for (const m of plan.modules) expect(tree.get(m.path)).toMatchObject({ type: 'file', mode: 0o644 });
  });

  it('has an /init that busybox sh parses', async () => {
    const bb = join(work, 'busybox');
    await writeFile(bb, await readContent(busybox));
    await chmod(bb, 0o755);
    const script = join(work, 'init');
    await writeFile(script, INIT_SCRIPT);
    const r = run(bb, ['sh', '-n', script]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(INIT_SCRIPT.startsWith('#!/bin/busybox sh\n')).toBe(true);
    // every applet the script calls exists in this busybox
    const applets = new Set(runOk(bb, ['--list']).split('\n'));
    for (const m of INIT_SCRIPT.matchAll(/\$bb ([a-z_]+)/g)) expect(applets.has(m[1]!), m[1]).toBe(true);
  });

  it('refuses a module plan for another kernel', () => {
    expect(() => buildInitramfsTree({ busybox, modules: { ...plan, kernelVersion: 'other' }, kernelVersion: version, epoch: 0 })).toThrow(/module plan is for kernel other/);
  });
});

describe('initramfs archive', () => {
  it('is a newc cpio that GNU cpio lists exactly like the tree', async () => {
    requireTool('cpio', 'cpio');
    const raw = await buildInitramfs(tree, 'none');
    const file = join(work, 'initramfs.cpio');
    await writeFile(file, raw);
    const listed = runOk('cpio', ['-it', '--quiet'], { input: raw }).split('\n').filter(Boolean);
    expect(listed.sort()).toEqual(tree.paths().filter((p) => p !== '').sort());
    const verbose = runOk('cpio', ['-itv', '--quiet'], { input: raw });
    expect(verbose).toMatch(/^-rwxr-xr-x\s+1 root\s+root\s+\d+ .* init$/m);
    expect(verbose).toMatch(/^crw-------\s+1 root\s+root\s+5,\s+1 .* dev\/console$/m);
    const init = runOk('cpio', ['-i', '--quiet', '--to-stdout', 'init'], { input: raw });
    expect(init).toBe(INIT_SCRIPT);
  });

  it('compresses deterministically with gzip -9 (mtime 0, OS unix) and zstd, both readable by the host tools', async () => {
    requireTool('zstd', 'zstd');
    requireTool('gzip', 'gzip');
    const raw = await buildInitramfs(tree, 'none');
    const gz = await buildInitramfs(tree, 'gzip');
    // magic, deflate, no flags, mtime 0, XFL 2 (max compression), OS 3 (unix)
    expect([...gz.subarray(0, 10)]).toEqual([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]);
    expect(Buffer.compare(gunzipSync(gz), raw)).toBe(0);
    const gzFile = join(work, 'i.gz');
    await writeFile(gzFile, gz);
    runOk('gzip', ['-t', gzFile]);
    const zst = await buildInitramfs(tree, 'zstd');
    const zstFile = join(work, 'i.zst');
    await writeFile(zstFile, zst);
    runOk('zstd', ['-t', '-q', zstFile]);
    expect(Buffer.compare(await zstdDecompressBytes(zst, 'zst'), raw)).toBe(0);
    expect(zst.length).toBeLessThan(gz.length);
    // same inputs, same bytes
    const again = buildInitramfsTree({ busybox, modules: plan, kernelVersion: version, epoch: EPOCH });
    expect(Buffer.compare(await buildInitramfs(again, 'gzip'), gz)).toBe(0);
    expect(Buffer.compare(await buildInitramfs(again, 'zstd'), zst)).toBe(0);
    const later = buildInitramfsTree({ busybox, modules: plan, kernelVersion: version, epoch: EPOCH + 1 });
    expect(Buffer.compare(await buildInitramfs(later, 'none'), raw)).not.toBe(0);
  });

  it('takes the profile\'s level: lower is bigger, still exact, and a gzip level above 9 is refused', async () => {
    requireTool('zstd', 'zstd');
    const raw = await buildInitramfs(tree, 'none');
    const z19 = await buildInitramfs(tree, 'zstd');
    const z3 = await buildInitramfs(tree, 'zstd', 3);
    const zstFile = join(work, 'i3.zst');
    await writeFile(zstFile, z3);
    expect(Buffer.compare(Buffer.from(runOk('zstd', ['-dc', zstFile], { encoding: 'latin1' }), 'latin1'), raw)).toBe(0);
    expect(z3.length).toBeGreaterThan(z19.length);
    const g1 = await buildInitramfs(tree, 'gzip', 1);
    expect(Buffer.compare(gunzipSync(g1), raw)).toBe(0);
    expect(g1.length).toBeGreaterThan((await buildInitramfs(tree, 'gzip')).length);
    await expect(buildInitramfs(tree, 'gzip', 12)).rejects.toThrow(/initramfs gzip level must be 1..9, got 12/);
  });

  it('carries the modules uncompressed and byte-identical', async () => {
    const members = readCpio(await buildInitramfs(tree, 'none'));
    for (const m of plan.modules) {
      const member = members.find((x) => x.name === m.path);
      expect(member, m.path).toBeDefined();
      expect(Buffer.compare(member!.data, await readContent(m.content))).toBe(0);
      expect(member!.data.subarray(0, 4)).toEqual(new Uint8Array([0x7f, 0x45, 0x4c, 0x46]));
    }
  });

  it('checks that the kernel can unpack the chosen compression', () => {
    expect(() => checkInitramfsCompression(config, 'gzip', version)).not.toThrow();
    expect(() => checkInitramfsCompression(config, 'zstd', version)).not.toThrow();
    const noZstd = new Map(config);
    noZstd.delete('CONFIG_RD_ZSTD');
    expect(() => checkInitramfsCompression(noZstd, 'zstd', version)).toThrow(InputError);
    expect(() => checkInitramfsCompression(noZstd, 'zstd', version)).toThrow(/CONFIG_RD_ZSTD/);
  });
});

describe('gzip header', () => {
  it('does not depend on the time of the build', async () => {
    const a = await buildInitramfs(tree, 'gzip');
    await new Promise((r) => setTimeout(r, 1100));
    const b = await buildInitramfs(tree, 'gzip');
    expect(Buffer.compare(a, b)).toBe(0);
  });
});
