import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { resolveOutputs, type OutputSpec } from '../../builder/outputs/index.ts';
import { writeOutputs } from '../../builder/outputs/write.ts';
import type { WrittenOutput } from '../../builder/outputs/types.ts';
import type { DiskImage } from '../../builder/outputs/disk.ts';
import { detectDiskFormat } from '../../builder/run/disk-format.ts';
import { vhdGeometry } from '../../builder/formats/vhd.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import { mergeExtents, type Extent } from '../../builder/util/extents.ts';
import { sha256File } from '../../builder/util/hash.ts';
import { tempDirs } from '../helpers/oracle-formats.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { prng } from '../helpers/prng.ts';

/**
 * The image formats written from a synthetic sparse disk, each read back by the tool that
 * reads it: qemu-img (qcow2, vpc, vmdk), GNU tar (the GCE sparse tar, the OVA), xmllint (the
 * OVF descriptor). The disk is not a whole number of clusters or MiB long, has data at its
 * first and last byte, a compressible and an incompressible run, and 40 small runs (a sparse
 * map longer than a tar header holds).
 */

const MiB = 1 << 20;
const SIZE = 70 * MiB + 1536;
const ALL: OutputSpec[] = ['raw', 'qcow2', 'vhd', 'vmdk', 'ova', 'gce'];
const BUILD = { name: 'fmt-test', version: '2.0', arch: 'x86_64', epoch: 1700000000, profileDigest: 'sha256:00' };

let work: string;
let disk: DiskImage;
let written: Extent[];
let outA: Map<string, WrittenOutput>;
let dirA: string;
const dirs = tempDirs();
afterAll(dirs.cleanup);

async function makeDisk(path: string): Promise<Extent[]> {
  const rand = prng(7);
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
  const writes: [number, Uint8Array][] = [
    [0, bytes(5000)],
    [MiB, new TextEncoder().encode('hello world '.repeat(25000))],
    [40 * MiB, bytes(3 * MiB)],
    [SIZE - 4, new TextEncoder().encode('tail')],
  ];
  for (let i = 0; i < 40; i++) writes.push([20 * MiB + i * 256 * 1024 + 512, bytes(4096)]);
  const fh = await open(path, 'w');
  try {
    await fh.truncate(SIZE);
    for (const [at, data] of writes) await fh.write(data, 0, data.length, at);
  } finally {
    await fh.close();
  }
  return mergeExtents(writes.map(([offset, data]) => ({ offset, length: data.length })));
}

async function writeAll(dir: string, specs: OutputSpec[], extents?: Extent[]): Promise<Map<string, WrittenOutput>> {
  const img = { ...disk, path: join(dir, 'disk.raw'), ...(extents ? { extents } : {}) };
  if (dir !== work) await writeFile(img.path, await readFile(disk.path));
  const out = await writeOutputs(resolveOutputs(specs), { disk: img, build: BUILD, dir });
  return new Map(out.map((o) => [o.format, o]));
}

/** 64 KiB clusters of the disk that hold a non-zero byte, counted by reading it. */
async function dataClusters(): Promise<number> {
  const b = await readFile(disk.path);
  let n = 0;
  for (let o = 0; o < b.length; o += 65536) if (b.subarray(o, o + 65536).some((x) => x !== 0)) n++;
  return n;
}

const identical = (a: string, fa: string, b: string, fb: string) => run('qemu-img', ['compare', '-f', fa, '-F', fb, a, b]);

describe('image formats from a disk', () => {
  beforeAll(async () => {
    requireTool('qemu-img', 'qemu-utils');
    requireTool('xmllint', 'libxml2-utils');
    requireTool('tar', 'tar');
    work = dirs.make('formats');
    dirA = work;
    const path = join(work, 'disk.raw');
    written = await makeDisk(path);
    disk = { path, size: SIZE, sha256: await sha256File(path) };
    outA = await writeAll(work, ALL);
  }, 120_000);

  it('lists every format with the sha256 and size of its file', async () => {
    expect([...outA.keys()]).toEqual(['raw', 'qcow2', 'vhd', 'vmdk', 'ova', 'gce']);
    for (const o of outA.values()) {
      expect(o.sha256).toBe(await sha256File(join(dirA, o.file)));
      expect(o.size).toBe((await stat(join(dirA, o.file))).size);
    }
    expect(outA.get('raw')).toEqual({ format: 'raw', file: 'disk.raw', sha256: disk.sha256, size: SIZE });
    expect((await readdir(dirA)).filter((f) => f.startsWith('.'))).toEqual([]);
  });

  it('writes the same bytes again, and the same reading only the written extents', async () => {
    const again = await writeAll(dirs.make('formats-b'), ALL, written);
    for (const [k, o] of outA) expect(again.get(k)?.sha256, k).toBe(o.sha256);
  });

  it('qcow2: qemu-img check is clean, only data clusters are allocated, and the content is the disk', async () => {
    const q = join(dirA, 'disk.qcow2');
    const check = JSON.parse(runOk('qemu-img', ['check', '--output=json', q])) as Record<string, unknown>;
    expect(check).toMatchObject({ 'check-errors': 0, format: 'qcow2' });
    expect(check.corruptions ?? 0).toBe(0);
    expect(check.leaks ?? 0).toBe(0);
    expect(check['allocated-clusters']).toBe(await dataClusters());
    const info = JSON.parse(runOk('qemu-img', ['info', '--output=json', q])) as { format: string; 'virtual-size': number; 'format-specific': { data: { compat: string } } };
    expect(info).toMatchObject({ format: 'qcow2', 'virtual-size': SIZE });
    expect(info['format-specific'].data.compat).toBe('1.1'); // version 3
    const r = identical(disk.path, 'raw', q, 'qcow2');
    expect(r.stdout + r.stderr).toContain('Images are identical');
    expect(r.code).toBe(0);
  });

  it('qcow2 with zlib: compressed clusters qemu-img reads back as the disk', async () => {
    const dir = dirs.make('formats-z');
    const out = await writeAll(dir, [{ format: 'qcow2', compression: 'zlib' }]);
    const q = join(dir, 'disk.qcow2');
    const check = JSON.parse(runOk('qemu-img', ['check', '--output=json', q])) as Record<string, number>;
    expect(check['check-errors']).toBe(0);
    expect(check['compressed-clusters']).toBeGreaterThan(0);
    expect(check['compressed-clusters']).toBeLessThan(check['allocated-clusters']!); // random data does not shrink: stored whole
    expect(out.get('qcow2')!.size).toBeLessThan(outA.get('qcow2')!.size);
    expect(identical(disk.path, 'raw', q, 'qcow2').code).toBe(0);
  });

  it('vhd: a fixed VHD of whole MiB with a valid footer, qemu-img reads it as the disk', async () => {
    const v = join(dirA, 'disk.vhd');
    const info = JSON.parse(runOk('qemu-img', ['info', '-f', 'vpc', '--output=json', v])) as { format: string; 'virtual-size': number };
    const virtual = Math.ceil(SIZE / MiB) * MiB;
    expect(info).toMatchObject({ format: 'vpc', 'virtual-size': virtual });
    expect((await stat(v)).size).toBe(virtual + 512);
    const footer = (await readFile(v)).subarray(virtual);
    expect(footer.toString('latin1', 0, 8)).toBe('conectix');
    expect(footer.readUInt32BE(60)).toBe(2); // fixed
    expect(footer.readBigUInt64BE(48)).toBe(BigInt(virtual));
    const sum = [...footer].reduce((n, b, i) => (i >= 64 && i < 68 ? n : n + b), 0);
    expect(footer.readUInt32BE(64)).toBe(~sum >>> 0);
    // The unique id is derived from the disk's content: another disk, another id.
    expect(footer.subarray(68, 84).some((b) => b !== 0)).toBe(true);
    expect(identical(disk.path, 'raw', v, 'vpc').code).toBe(0);
  });

  it('vhd geometry is the one qemu-img writes for a size it need not round', async () => {
    for (const size of [71 * MiB, 128 * MiB, 674 * MiB, 4096 * MiB, 40 * 1024 * MiB]) {
      const f = join(work, `geometry-${size}.vhd`);
      runOk('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', f, String(size)]);
      const fh = await open(f, 'r');
      const footer = Buffer.alloc(512);
      await fh.read(footer, 0, 512, (await fh.stat()).size - 512);
      await fh.close();
      await rm(f);
      // qemu-img rounds the size up to whole cylinders first; the geometry of that size is the specification's.
      const rounded = Number(footer.readBigUInt64BE(48));
      expect(rounded).toBeGreaterThanOrEqual(size);
      expect(vhdGeometry(rounded), `${size}`).toEqual({ cylinders: footer.readUInt16BE(56), heads: footer[58], sectors: footer[59] });
    }
  });

  it('vmdk: a stream-optimized VMDK qemu-img checks and reads as the disk', async () => {
    const k = join(dirA, 'disk.vmdk');
    expect(run('qemu-img', ['check', '-f', 'vmdk', k]).code).toBe(0);
    const info = JSON.parse(runOk('qemu-img', ['info', '--output=json', k])) as { format: string; 'virtual-size': number; 'format-specific': { data: { 'create-type': string; extents: { compressed: boolean }[] } } };
    expect(info).toMatchObject({ format: 'vmdk', 'virtual-size': Math.ceil(SIZE / 512) * 512 });
    expect(info['format-specific'].data['create-type']).toBe('streamOptimized');
    expect(info['format-specific'].data.extents[0]!.compressed).toBe(true);
    expect(identical(disk.path, 'raw', k, 'vmdk').code).toBe(0);
  });

  it('ova: descriptor first, a manifest that pins each file, a well-formed OVF naming the disk', async () => {
    const ova = join(dirA, 'disk.ova');
    const names = runOk('tar', ['-tf', ova]).trim().split('\n');
    expect(names).toEqual(['fmt-test.ovf', 'fmt-test.mf', 'disk.vmdk']);
    const x = dirs.make('ova');
    runOk('tar', ['-xf', ova, '-C', x]);
    const mf = await readFile(join(x, 'fmt-test.mf'), 'utf8');
    for (const f of ['fmt-test.ovf', 'disk.vmdk']) {
      expect(mf).toContain(`SHA256(${f})= ${createHash('sha256').update(await readFile(join(x, f))).digest('hex')}\n`);
    }
    const ovf = join(x, 'fmt-test.ovf');
    runOk('xmllint', ['--noout', ovf]);
    const xp = (q: string) => runOk('xmllint', ['--xpath', q, ovf]).trim();
    const ns = (el: string) => `*[local-name()='${el}']`;
    expect(xp(`string(//${ns('File')}/@*[local-name()='size'])`)).toBe(String((await stat(join(x, 'disk.vmdk'))).size));
    expect(xp(`string(//${ns('File')}/@*[local-name()='href'])`)).toBe('disk.vmdk');
    expect(xp(`string(//${ns('Disk')}/@*[local-name()='capacity'])`)).toBe(String(SIZE));
    expect(xp(`string(//${ns('Disk')}/@*[local-name()='format'])`)).toMatch(/#streamOptimized$/);
    expect(xp(`string(//${ns('Config')}[@*[local-name()='key']='firmware']/@*[local-name()='value'])`)).toBe('efi');
    expect(await sha256File(join(x, 'disk.vmdk'))).toBe(outA.get('vmdk')!.sha256);
    expect(identical(disk.path, 'raw', join(x, 'disk.vmdk'), 'vmdk').code).toBe(0);
  });

  it('gce: an old-GNU sparse tar.gz of disk.raw, whole GiB, that GNU tar lists and extracts as the disk', async () => {
    const gz = join(dirA, 'disk.raw.tar.gz');
    runOk('gzip', ['-t', gz]);
    const tar = gunzipSync(await readFile(gz));
    expect(String.fromCharCode(tar[156]!)).toBe('S');
    expect(tar.toString('latin1', 257, 265)).toBe('ustar  \0');
    expect(tar[482]).toBe(1); // more runs than the header holds: extension blocks follow
    const GiB = 2 ** 30;
    expect(runOk('tar', ['-tvzf', gz])).toMatch(new RegExp(`^-rw-r--r-- 0/0 +${GiB} 2023-11-14 \\d\\d:\\d\\d disk\\.raw\\n$`));
    const x = dirs.make('gce');
    runOk('tar', ['--sparse', '-xzf', gz, '-C', x]);
    const back = join(x, 'disk.raw');
    const st = await stat(back);
    expect(st.size).toBe(GiB);
    // Extracted sparse: far fewer blocks allocated than the disk's size.
    expect(st.blocks * 512).toBeLessThan(SIZE / 4);
    // The disk, then zeros to the GiB.
    const r = identical(disk.path, 'raw', back, 'raw');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await rm(x, { recursive: true });
  });

  it('ossify run knows each bootable format by its bytes, and refuses archives', async () => {
    expect(await detectDiskFormat(disk.path)).toBe('raw');
    expect(await detectDiskFormat(join(dirA, 'disk.qcow2'))).toBe('qcow2');
    expect(await detectDiskFormat(join(dirA, 'disk.vhd'))).toBe('vpc');
    expect(await detectDiskFormat(join(dirA, 'disk.vmdk'))).toBe('vmdk');
    await expect(detectDiskFormat(join(dirA, 'disk.ova'), { refuseArchives: true })).rejects.toThrow(/tar archive/);
    await expect(detectDiskFormat(join(dirA, 'disk.raw.tar.gz'), { refuseArchives: true })).rejects.toThrow(/gzip archive/);
    expect(await detectDiskFormat(join(dirA, 'disk.ova'))).toBe('raw');
  });
});

describe('outputs in the profile and on the command line', () => {
  let dir: string;
  beforeAll(async () => {
    dir = dirs.make('outputs-profile');
  });
  const profile = async (name: string, body: string) => {
    const p = join(dir, name);
    await writeFile(p, `extends: ${join(PROJECT_ROOT, 'profiles/default.yaml')}\n${body}`);
    return p;
  };

  it('an unknown format is a profile error at file:line:column', async () => {
    const p = await profile('bad.yaml', 'outputs:\n  - qcow2\n  - vhdx\n');
    const r = await ossify(['validate', p]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${p}:4:5: invalid value "vhdx" at outputs[1]`);
    expect(r.stderr).toMatch(/did you mean "vhd"/);
  });

  it('a setting of another format is refused where it is written', async () => {
    const p = await profile('bad-setting.yaml', 'outputs:\n  - { format: vhd, compression: zlib }\n');
    const r = await ossify(['validate', p]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${p}:3:33: invalid value "zlib" at outputs[0].compression`);
    expect(r.stderr).toContain('a setting of qcow2, not of vhd');
  });

  it('--output with an unknown format exits 2 before building', async () => {
    const r = await ossify(['build', join(PROJECT_ROOT, 'profiles/default.yaml'), '--out', dir, '--output', 'qcow2,vhdx']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('--output vhdx: unknown image format');
  });

  it('the formats asked for do not change the profile digest (nor the disk GUIDs derived from it)', async () => {
    const plain = await loadProfile(await profile('plain.yaml', ''));
    const more = await loadProfile(await profile('more.yaml', 'outputs: [qcow2, { format: qcow2, compression: zlib }, gce]\n'));
    expect(more.profile.outputs).toEqual(['qcow2', { format: 'qcow2', compression: 'zlib' }, 'gce']);
    expect(more.digest).toBe(plain.digest);
    expect(resolveOutputs(more.profile.outputs)).toEqual([
      { format: 'qcow2', options: { compression: 'zlib' } },
      { format: 'gce', options: {} },
    ]);
    expect(resolveOutputs(undefined)).toEqual([{ format: 'raw', options: {} }]);
  });
});
