import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARCHES } from '../../builder/arch.ts';
import type { StatusReport } from '../../builder/installer/status.ts';
import { buildInstallerImage } from '../../builder/release/installer-image.ts';
import { pushBuilds } from '../../builder/release/push.ts';
import { ossify } from '../helpers/cli.ts';
import { diskOracles, fakeSquashfs, noise, sha, writeBuildOutput } from '../helpers/installer-fixtures.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';
import { fakeStaticElf, hostBusybox, startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * One release built for x86_64 and aarch64, pushed as one image index: `install --image`
 * takes the image of `--arch` (default this machine's) and types the disk for it, and
 * `upgrade --image` takes the disk's own architecture from the same index. Synthetic
 * releases, no boot (test/e2e/arm64.test.ts boots a real aarch64 build).
 */

const work = tempDir('multiarch');
let reg: RegistryHandle;
let sdboot: string;
const index: Record<string, string> = {};

function release(version: string, arch: string, seed: number): string {
  const dir = join(work.path, `release-${version}-${arch}`);
  mkdirSync(dir, { recursive: true });
  writeBuildOutput(
    dir,
    { 'rootfs.squashfs': fakeSquashfs(60_000 + seed, seed), vmlinuz: noise(150_000 + seed, seed + 1), 'initramfs.img': noise(40_000 + seed, seed + 2) },
    {
      name: 'multi-os',
      version,
      arch,
      profileDigest: `sha256:${sha(Buffer.from(`profile ${arch}`))}`,
      epoch: 1_700_000_000,
      boot: { entries: 'type1', cmdline: arch === 'aarch64' ? 'console=ttyAMA0' : 'console=ttyS0', timeout: 0, tries: 3 },
    },
  );
  return dir;
}

async function ok(args: string[]) {
  const r = await ossify(args);
  expect(r.exitCode, `ossify ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

const status = async (disk: string) => JSON.parse((await ok(['status', '--disk', disk, '--json'])).stdout) as StatusReport;

beforeAll(async () => {
  reg = await startRegistry();
  sdboot = join(work.path, 'systemd-boot.efi');
  writeFileSync(sdboot, noise(80_000, 99));
  for (const [version, seed] of [['1.0.0', 10], ['2.0.0', 20]] as const) {
    const x86 = release(version, 'x86_64', seed);
    const arm = release(version, 'aarch64', seed + 5);
    await buildInstallerImage(x86, { busybox: hostBusybox() });
    await buildInstallerImage(arm, { busybox: fakeStaticElf(ARCHES.aarch64.elfMachine) });
    index[version] = (await pushBuilds([x86, arm], `${reg.host}/multi/os:${version}`, { insecure: true })).reference;
  }
});

afterAll(async () => {
  await reg?.stop();
  work.cleanup();
});

describe('a two-architecture image index', () => {
  it('install --image --arch aarch64 lays out an arm64 disk: root type B921B045 (sfdisk), BOOTAA64.EFI (mtools), status says aarch64', async () => {
    const disk = join(work.path, 'arm.raw');
    await ok(['install', '--image', index['1.0.0']!, '--insecure', '--arch', 'aarch64', '--disk', disk, '--systemd-boot', sdboot]);
    needTool('sfdisk', 'fdisk');
    const table = JSON.parse(run('sfdisk', ['--json', disk]).stdout) as { partitiontable: { partitions: { name: string; type: string }[] } };
    const roots = table.partitiontable.partitions.filter((p) => p.name.startsWith('ROOT-'));
    expect(roots.map((p) => p.type)).toEqual([ARCHES.aarch64.rootType, ARCHES.aarch64.rootType]);
    // util-linux's own name for that type GUID
    expect(run('sfdisk', ['--label', 'gpt', '--list-types']).stdout).toMatch(new RegExp(`${ARCHES.aarch64.rootType}\\s+Linux root \\(ARM-64\\)`, 'i'));
    const esp = await diskOracles(disk, join(work.path, 'arm-esp.img'));
    needTool('mdir', 'mtools');
    const boot = run('mdir', ['-b', '-i', esp, '::/EFI/BOOT'], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    expect(boot.stdout.trim().split('\n')).toEqual(['::/EFI/BOOT/BOOTAA64.EFI']);
    const s = await status(disk);
    expect(s.arch).toBe('aarch64');
    expect(s.slots.find((x) => x.slot === 'a')!.release).toMatchObject({ name: 'multi-os', version: '1.0.0' });
  });

  it('install --image without --arch takes this machine’s image', async () => {
    const disk = join(work.path, 'host.raw');
    await ok(['install', '--image', index['1.0.0']!, '--insecure', '--disk', disk, '--systemd-boot', sdboot]);
    expect((await status(disk)).arch).toBe(process.arch === 'arm64' ? 'aarch64' : 'x86_64');
  });

  it('upgrade --image takes the disk’s architecture from the index, and refuses another one', async () => {
    const disk = join(work.path, 'arm.raw');
    const wrong = await ossify(['upgrade', '--image', index['2.0.0']!, '--insecure', '--arch', 'x86_64', '--disk', disk]);
    expect(wrong.exitCode).toBe(2);
    expect(wrong.stderr).toMatch(/multi-os 2\.0\.0 is built for x86_64, but the disk is aarch64/);
    await ok(['upgrade', '--image', index['2.0.0']!, '--insecure', '--disk', disk]);
    const s = await status(disk);
    expect(s.next).toBe('b');
    const b = s.slots.find((x) => x.slot === 'b')!;
    expect(b.release).toMatchObject({ name: 'multi-os', version: '2.0.0', arch: 'aarch64' });
  });
});
