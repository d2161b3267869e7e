import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInitramfs, buildInitramfsTree } from '../../builder/initramfs/index.ts';
import { programsTree } from '../../builder/elf/index.ts';
import { loadInput } from '../../builder/inputs/index.ts';
import { findKernel, resolveModules } from '../../builder/kernel/index.ts';
import { MT } from '../../builder/oci/media-types.ts';
import { RegistryClient, bytesBlobSource } from '../../builder/oci/registry.ts';
import type { BuildRecord } from '../../builder/release/build-json.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { readContent } from '../../builder/tree/content.ts';
import type { FileTree } from '../../builder/tree/tree.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { requireTool } from '../helpers/oracle.ts';
import { startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * The default image with its kernel from an OCI image in LinuxKit's layout (`/kernel`, and
 * `/kernel.tar` holding lib/modules), made here from the cached Debian kernel, pushed to a
 * real registry and pinned by digest. It must build the same initramfs as the .deb does,
 * and boot.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

let reg: RegistryHandle;
let work: string;
let digest: string;
let debian: FileTree;

async function tarOf(entries: [string, Uint8Array | 'dir'][]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const [name, data] of entries) {
    const header = { name, mode: data === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: new Date(0), type: data === 'dir' ? ('directory' as const) : ('file' as const) };
    await new Promise<void>((res, rej) => (data === 'dir' ? pack.entry(header, (e) => (e ? rej(e) : res())) : pack.entry(header, Buffer.from(data), (e) => (e ? rej(e) : res()))));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

beforeAll(async () => {
  requireTool('qemu-system-x86_64', 'qemu-system-x86');
  work = await mkdtemp(join(tmpdir(), 'ossify-oci-kernel-'));
  reg = await startRegistry();
  debian = (await loadInput({ deb: 'linux-image-cloud-amd64', depends: ['linux-image-*'] } as Input, { cacheDir: CACHE })).tree;
  const k = findKernel(debian);
  const modules: [string, Uint8Array | 'dir'][] = [];
  for (const [p, e] of debian.walk()) {
    if (!p.startsWith(`${k.modulesDir}/`) && p !== k.modulesDir) continue;
    if (e.type === 'dir') modules.push([p, 'dir']);
    else if (e.type === 'file') modules.push([p, await readContent(e.content)]);
  }
  const layerTar = await tarOf([
    ['kernel', await readContent(k.vmlinuz)],
    ['kernel.tar', await tarOf(modules)],
  ]);
  const layer = gzipSync(layerTar, { level: 1 });
  const client = await RegistryClient.create(reg.host, { insecure: true, credentials: null });
  try {
    const layerDesc = { mediaType: MT.layerTarGzip, digest: `sha256:${sha(layer)}`, size: layer.length };
    await client.pushBlob('kernel', layerDesc, bytesBlobSource(layer));
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${sha(layerTar)}`] } }));
    const configDesc = { mediaType: MT.config, digest: `sha256:${sha(config)}`, size: config.length };
    await client.pushBlob('kernel', configDesc, bytesBlobSource(config));
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: configDesc, layers: [layerDesc] }));
    digest = await client.putManifest('kernel', k.version, manifest, MT.manifest);
  } finally {
    await client.close();
  }
}, 600_000);

afterAll(async () => {
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('a kernel from an OCI image in LinuxKit layout', () => {
  let record: BuildRecord & { outDir: string };

  it('builds the default profile with it, pinned by digest', async () => {
    const profile = join(work, 'oci-kernel.yaml');
    await writeFile(
      profile,
      [`extends: ${join(PROJECT_ROOT, 'profiles', 'default.yaml')}`, 'name: oci-kernel', 'kernel:', '  input:', `    oci: "${reg.host}/kernel@${digest}"`, '    insecure: true', ''].join('\n'),
    );
    const r = await ossify(['build', profile, '--out', join(work, 'out'), '--cache-dir', CACHE, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    record = JSON.parse(r.stdout) as BuildRecord & { outDir: string };
    const k = findKernel(debian);
    expect(record.kernelVersion).toBe(k.version);
    expect(record.sources).toContainEqual({ kind: 'oci', name: `${reg.host}/kernel`, sha256: digest.slice(7) });
    expect(record.artifacts['vmlinuz']?.sha256).toBe(sha(await readContent(k.vmlinuz)));

    // The same modules, busybox and epoch as the .deb kernel: the same initramfs, byte for byte.
    const loaded = await loadProfile(profile, { env: {} });
    const plan = await resolveModules(debian, k.version, loaded.profile.kernel.modules);
    const busybox = (await loadInput(loaded.profile.initramfs.busybox, { cacheDir: CACHE })).tree.resolve('bin/busybox');
    if (busybox?.type !== 'file') throw new Error('no busybox');
    // The default profile's initramfs.programs (dmsetup for its dm-verity root) come along too.
    const progs = loaded.profile.initramfs.programs ?? [];
    const programs = progs.length ? (await programsTree(progs, 'initramfs.programs', async (i) => (await loadInput(i, { cacheDir: CACHE })).tree)).tree : undefined;
    const expected = await buildInitramfs(buildInitramfsTree({ busybox: busybox.content, modules: plan, kernelVersion: k.version, epoch: loaded.epoch, ...(programs ? { programs } : {}) }), loaded.profile.initramfs.compression, loaded.profile.initramfs.level);
    expect(sha(await readFile(join(record.outDir, 'initramfs.img')))).toBe(sha(expected));
  }, 600_000);

  it('boots in QEMU to the rootfs init on slot a', async () => {
    expect(record, 'the build above must pass first').toBeDefined();
    const r = await runDisk({ disk: join(record.outDir, 'disk.raw'), expect: /OSSIFY-BOOT name=oci-kernel version=1\.0\.0 slot=a/, timeout: 240, noReboot: true });
    expect(r.matched, r.log.slice(-4000)).toBe(true);
  }, 300_000);
});
