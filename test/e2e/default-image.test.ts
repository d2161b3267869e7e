import { describe, expect, it, beforeAll } from 'vitest';
import { execa } from 'execa';
import { mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { initramfsCpio, requireTool } from '../helpers/oracle.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import type { BuildRecord } from '../../builder/release/build-json.ts';
import { startRegistry } from '../helpers/registry.ts';
import { createHash } from 'node:crypto';

// One shared input cache so the kernel package is downloaded once per machine.
const CACHE = join(PROJECT_ROOT, 'out', 'cache');

let outA: string;
let outB: string;
let dirA: string;
let record: BuildRecord & { installer: { manifestDigest: string } };

async function buildDefault(outRoot: string, env: Record<string, string> = {}, umask?: string, extra: string[] = []) {
  const r = await ossify(['build', 'profiles/default.yaml', '--out', outRoot, '--cache-dir', CACHE, '--json', ...extra], umask ? { env, umask } : { env });
  if (r.exitCode !== 0) throw new Error(`ossify build failed (${r.exitCode}):\n${r.stderr}`);
  return JSON.parse(r.stdout) as BuildRecord & { outDir: string; installer: { manifestDigest: string } };
}

async function extractRange(disk: string, offset: number, size: number, to: string): Promise<void> {
  const src = await open(disk, 'r');
  const dst = await open(to, 'w');
  try {
    const buf = Buffer.alloc(4 << 20);
    for (let pos = 0; pos < size; pos += buf.length) {
      const n = Math.min(buf.length, size - pos);
      const { bytesRead } = await src.read(buf, 0, n, offset + pos);
      await dst.write(buf, 0, bytesRead, pos);
    }
  } finally {
    await src.close();
    await dst.close();
  }
}

describe('the default profile', () => {
  beforeAll(async () => {
    for (const [tool, pkg] of [
      ['unsquashfs', 'squashfs-tools'],
      ['sgdisk', 'gdisk'],
      ['fsck.fat', 'dosfstools'],
      ['cpio', 'cpio'],
      ['qemu-system-x86_64', 'qemu-system-x86'],
    ] as const) {
      await requireTool(tool, pkg);
    }
    outA = await mkdtemp(join(tmpdir(), 'ossify-e2e-a-'));
    outB = await mkdtemp(join(tmpdir(), 'ossify-e2e-b-'));
    const built = await buildDefault(outA);
    dirA = built.outDir;
    record = built;
  }, 900_000);

  it('writes every artifact and a build record', async () => {
    const files = (await readdir(dirA)).sort();
    expect(files.filter((f) => f.startsWith('.'))).toEqual([]);
    // rootfs.verity: the default profile protects its root with dm-verity.
    expect(files).toEqual(expect.arrayContaining(['build.json', 'disk.raw', 'initramfs.img', 'oci', 'provenance.intoto.json', 'rootfs.squashfs', 'rootfs.verity', 'sbom.spdx.json', 'vmlinuz']));
    expect(record.profileDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const onDisk = JSON.parse(await readFile(join(dirA, 'build.json'), 'utf8')) as BuildRecord;
    expect(onDisk.artifacts).toEqual(record.artifacts);
    expect(onDisk.sources.some((s) => s.name.startsWith('linux-image-') && s.sha256)).toBe(true);
  });

  it('has a rootfs unsquashfs lists as the builder made it', async () => {
    const r = await execa('unsquashfs', ['-lls', '-d', '', join(dirA, 'rootfs.squashfs')]);
    const lines = r.stdout.split('\n');
    const find = (path: string) => lines.find((l) => l.endsWith(` ${path}`) || l.includes(` ${path} -> `));
    expect(find('/sbin/init')).toMatch(/^-rwxr-xr-x root\/root/);
    expect(find('/bin/busybox')).toMatch(/^-rwxr-xr-x root\/root/);
    expect(find('/etc/os-release')).toMatch(/^-rw-r--r-- root\/root/);
    for (const d of ['/dev', '/proc', '/sys', '/run', '/tmp']) expect(find(d)).toMatch(/^d/);
  });

  it('has a GPT that sgdisk verifies, with the A/B layout', async () => {
    const disk = join(dirA, 'disk.raw');
    const v = await execa('sgdisk', ['-v', disk]);
    expect(v.stdout).toMatch(/No problems found/);
    const p = await execa('sgdisk', ['-p', disk]);
    for (const label of ['ESP', 'ROOT-A', 'ROOT-B', 'STATE']) expect(p.stdout).toContain(label);
  });

  it('has an ESP that fsck.fat finds clean', async () => {
    const esp = record.partitions.find((p) => p.label === 'ESP')!;
    const img = join(outA, 'esp.img');
    await extractRange(join(dirA, 'disk.raw'), esp.offset, esp.size, img);
    const r = await execa('fsck.fat', ['-n', img], { reject: false });
    expect(r.exitCode, r.stdout + r.stderr).toBe(0);
    const listing = await execa('mdir', ['-/', '-b', '-i', img, '::'], { reject: false });
    expect(listing.stdout).toContain('::/loader/entries/ossify-a.conf');
    expect(listing.stdout).toContain('::/EFI/BOOT/BOOTX64.EFI');
    await rm(img);
  });

  it('has a zstd initramfs (as the profile says) that zstd unpacks and cpio can list', async () => {
    const img = await readFile(join(dirA, 'initramfs.img'));
    expect([...img.subarray(0, 4)]).toEqual([0x28, 0xb5, 0x2f, 0xfd]);
    const cpioBytes = initramfsCpio(img);
    const r = await execa('cpio', ['-t', '--quiet'], { input: cpioBytes, encoding: 'utf8' });
    const names = r.stdout.split('\n');
    expect(names).toContain('init');
    expect(names).toContain('bin/busybox');
    expect(names.some((n) => /squashfs\.ko$/.test(n))).toBe(true);
    // dm-verity: the module and dmsetup with its shared libraries map the root.
    expect(names.some((n) => /dm-verity\.ko$/.test(n))).toBe(true);
    expect(names).toContain('sbin/dmsetup');
    expect(names).toContain('lib/x86_64-linux-gnu/libdevmapper.so.1.02.1');
  });

  it('builds byte-identical artifacts again in another directory, time zone and umask', async () => {
    // --no-cache: every step really runs again, so this compares two computations, not a cache copy.
    const again = await buildDefault(outB, { TZ: 'Pacific/Kiritimati', LC_ALL: 'C', LANG: 'C' }, '077', ['--no-cache']);
    expect(again.artifacts).toEqual(record.artifacts);
    expect(again.profileDigest).toBe(record.profileDigest);
    expect(again.installer.manifestDigest).toBe(record.installer.manifestDigest);
  }, 900_000);

  it('pushes its installer image by digest, and skopeo reads back exactly those bytes', async () => {
    const registry = await startRegistry();
    try {
      const ref = `${registry.host}/ossify/default:1.0.0`;
      const r = await ossify(['push', dirA, ref, '--insecure', '--no-progress']);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe(`${registry.host}/ossify/default@${record.installer.manifestDigest}`);
      const raw = await execa('skopeo', ['inspect', '--raw', ...registry.skopeoArgs('inspect'), `docker://${r.stdout.trim()}`], {
        encoding: 'buffer',
      });
      expect(`sha256:${createHash('sha256').update(raw.stdout).digest('hex')}`).toBe(record.installer.manifestDigest);
    } finally {
      await registry.stop();
    }
  }, 300_000);

  it('boots in QEMU to the rootfs init on slot a', async () => {
    const r = await runDisk({
      disk: join(dirA, 'disk.raw'),
      expect: /OSSIFY-BOOT name=ossify-default version=1\.0\.0 slot=a/,
      timeout: 240,
      noReboot: true,
    });
    expect(r.matched, r.log.slice(-4000)).toBe(true);
  }, 300_000);
});

describe('a malformed profile', () => {
  it('exits 2 naming file:line:column and writes nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ossify-bad-'));
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'name: x\nversion: 1.0.0\nkernal:\n  input: { deb: linux-image-cloud-amd64 }\n');
    const out = join(dir, 'out');
    const r = await ossify(['build', bad, '--out', out]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml:3:1/);
    expect(r.stderr).toContain('kernal');
    await expect(readdir(out)).rejects.toThrow();
    await rm(dir, { recursive: true, force: true });
  });
});
