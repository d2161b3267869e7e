import { execa } from 'execa';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARCHES } from '../../builder/arch.ts';
import type { BuildRecord } from '../../builder/release/build-json.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { diskStatus, ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { initramfsCpio, requireTool } from '../helpers/oracle.ts';

/**
 * profiles/default-arm64.yaml on an x86-64 host: every Debian input fetched for arm64, built
 * twice (`--verify-reproducible`: the second in another directory, time zone, umask and locale,
 * without the stage cache) with byte-identical results, and booted under
 * qemu-system-aarch64 -machine virt -cpu max (TCG) with AAVMF to its OSSIFY-BOOT line.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
let root: string;
let record: BuildRecord & { outDir: string; installer: { manifestDigest: string } };
let stderr: string;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'ossify-arm64-'));
  const r = await ossify(['build', 'profiles/default-arm64.yaml', '--out', join(root, 'out'), '--cache-dir', CACHE, '--json', '--verify-reproducible']);
  stderr = r.stderr;
  if (r.exitCode !== 0) {
    const hint = /dpkg --add-architecture arm64/.test(r.stderr) ? '' : '\n(the host needs `dpkg --add-architecture arm64 && apt-get update`: scripts/install-host.sh)';
    throw new Error(`ossify build profiles/default-arm64.yaml failed (${r.exitCode}):\n${r.stderr}${hint}`);
  }
  record = JSON.parse(r.stdout) as typeof record;
}, 900_000);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('the aarch64 default image', () => {
  it('is built twice byte-identically, from arm64 packages, into its own output directory', () => {
    expect(stderr).toMatch(/reproducible: a second build \(.*\) is byte-identical, installer image sha256:[0-9a-f]{64}/);
    expect(record.outDir).toBe(join(root, 'out', 'ossify-default-1.0.0-aarch64'));
    expect(record.arch).toBe('aarch64');
    expect(record.kernelVersion).toMatch(/-cloud-arm64$/);
    expect(Object.keys(record.artifacts)).toContain('systemd-bootaa64.efi');
    expect(record.partitions.filter((p) => p.label.startsWith('ROOT-')).map((p) => p.typeGuid)).toEqual([ARCHES.aarch64.rootType, ARCHES.aarch64.rootType]);
  });

  it('holds arm64 programs (readelf) and an installer image for linux/arm64 (skopeo)', async () => {
    requireTool('unsquashfs', 'squashfs-tools');
    requireTool('bsdtar', 'libarchive-tools');
    requireTool('readelf', 'binutils');
    requireTool('skopeo', 'skopeo');
    const rootfs = join(root, 'rootfs');
    await execa('unsquashfs', ['-q', '-n', '-d', rootfs, join(record.outDir, 'rootfs.squashfs'), 'bin/busybox']);
    const initrd = join(root, 'initrd');
    mkdirSync(initrd);
    writeFileSync(join(root, 'initrd.cpio'), initramfsCpio(readFileSync(join(record.outDir, 'initramfs.img'))));
    await execa('bsdtar', ['-xf', join(root, 'initrd.cpio'), '-C', initrd]);
    // dmsetup and its shared libraries came from arm64 packages too (depends: true).
    const interp = /Requesting program interpreter: \/?([^\]]+)\]/.exec((await execa('readelf', ['-l', join(initrd, 'sbin/dmsetup')])).stdout)?.[1];
    expect(interp).toBe('lib/ld-linux-aarch64.so.1');
    for (const prog of [join(rootfs, 'bin/busybox'), join(initrd, 'bin/busybox'), join(initrd, 'sbin/dmsetup'), join(initrd, interp!)]) {
      expect((await execa('readelf', ['-h', prog])).stdout, prog).toMatch(/Machine:\s+AArch64/);
    }
    const inspect = JSON.parse((await execa('skopeo', ['inspect', '--override-arch', 'arm64', `oci:${join(record.outDir, 'oci')}`])).stdout) as { Architecture: string; Os: string };
    expect(inspect).toMatchObject({ Architecture: 'arm64', Os: 'linux' });
  });

  it('boots under qemu-system-aarch64 (TCG) and AAVMF to its OSSIFY-BOOT line', async () => {
    requireTool('qemu-system-aarch64', 'qemu-system-arm');
    const disk = join(record.outDir, 'disk.raw');
    expect((await diskStatus(disk)).arch).toBe('aarch64');
    const r = await runDisk({ disk, expect: /OSSIFY-BOOT name=ossify-default version=1\.0\.0 slot=a/, timeout: 400, noReboot: true, snapshot: true });
    expect(r.matched, r.log.slice(-3000)).toBe(true);
    expect(r.log).toContain('EFI stub: Booting Linux Kernel');
    process.stderr.write(`arm64 boot to OSSIFY-BOOT: ${r.seconds.toFixed(1)} s\n`);
  }, 450_000);
});
