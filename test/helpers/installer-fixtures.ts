import { createHash } from 'node:crypto';
import { copyFileSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { openFatEditor } from '../../builder/formats/fat/mutate.ts';
import { openDisk, partitionIo } from '../../builder/installer/disk.ts';
import { install } from '../../builder/installer/install.ts';
import { probeLayout, type OssifyLayout } from '../../builder/installer/layout.ts';
import { openReleaseDir } from '../../builder/installer/release.ts';
import { needTool, run } from './oracle-formats.ts';

/**
 * Fixtures shared by the installer tests (test/installer*.test.ts): synthetic release files,
 * disk images in a test file's work directory, and the sgdisk / fsck.fat oracles.
 */

const MiB = 1 << 20;

/** `size` bytes of xorshift noise, the same for the same seed. */
export function noise(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed | 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** The sha256 of some bytes, in hex. */
export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Enough of a squashfs for status: the magic and bytes_used, the rest noise, padded to 4 KiB. */
export function fakeSquashfs(used: number, seed: number): Buffer {
  const b = noise(Math.ceil(used / 4096) * 4096, seed);
  b.write('hsqs', 0, 'latin1');
  b.writeBigUInt64LE(BigInt(used), 40);
  b.fill(0, used);
  return b;
}

/** What a fake release says about itself in build.json; `boot` and the rest are copied as given. */
export interface FakeBuild {
  name: string;
  version: string;
  arch: string;
  profileDigest: string;
  epoch: number;
  boot?: unknown;
  [field: string]: unknown;
}

/**
 * Writes `files` into the build output `dir` and a build.json that records them, as `ossify
 * build` does, with the layout every fake release asks for (2 MiB root slots, a 34 MiB ESP,
 * 1 MiB of STATE).
 */
export function writeBuildOutput(dir: string, files: Record<string, Uint8Array>, fields: FakeBuild): void {
  const artifacts: Record<string, { sha256: string; size: number }> = {};
  for (const [n, b] of Object.entries(files)) {
    writeFileSync(join(dir, n), b);
    artifacts[n] = { sha256: sha(b), size: b.length };
  }
  const { name, version, arch, profileDigest, epoch, boot, ...rest } = fields;
  const build = {
    name,
    version,
    arch,
    profileDigest,
    epoch,
    kernelVersion: '6.1.0-test',
    artifacts,
    slots: { rootSize: 2 * MiB },
    ...(boot !== undefined ? { boot } : {}),
    partitions: [
      { label: 'ESP', size: 34 * MiB },
      { label: 'ROOT-A', size: 2 * MiB },
      { label: 'ROOT-B', size: 2 * MiB },
      { label: 'STATE', size: MiB },
    ],
    ...rest,
  };
  writeFileSync(join(dir, 'build.json'), `${JSON.stringify(build, null, 2)}\n`);
}

/**
 * Disk images named `<dir>/<name>.raw` in one test file's work directory. `boot` is asked at
 * each install, so a systemd-boot file made in beforeAll will do.
 */
export function diskImages(dir: string, boot: () => { systemdBoot: string; cmdline: string }) {
  return {
    /** A new image with the release directory `from` installed; its path. */
    async installFresh(name: string, from: string): Promise<string> {
      const disk = join(dir, `${name}.raw`);
      await install({ disk, source: await openReleaseDir(from), cacheDir: join(dir, 'cache'), ...boot() });
      return disk;
    },
    /** A copy of the image `src`, to change without touching it; its path. */
    copyDisk(src: string, name: string): string {
      const dst = join(dir, `${name}.raw`);
      copyFileSync(src, dst);
      return dst;
    },
  };
}

/** The partition layout of a disk image, read-only. */
export async function layoutOf(disk: string): Promise<OssifyLayout> {
  const d = await openDisk(disk, { write: false });
  try {
    return await probeLayout(d);
  } finally {
    await d.close();
  }
}

/** `size` bytes of a file from `offset`. */
export async function readRange(disk: string, offset: number, size: number): Promise<Buffer> {
  const fh = await open(disk, 'r');
  try {
    const b = Buffer.alloc(size);
    await fh.read(b, 0, size, offset);
    return b;
  } finally {
    await fh.close();
  }
}

/** The ESP of a disk image cut out into the file `img` (for mtools and fsck.fat); `img`. */
export async function espToFile(disk: string, img: string): Promise<string> {
  const esp = (await layoutOf(disk)).esp;
  writeFileSync(img, await readRange(disk, esp.offset, esp.size));
  return img;
}

/** Renames a boot entry in loader/entries on the disk's ESP, as systemd-boot's boot counting does. */
export async function renameEntry(disk: string, from: string, to: string): Promise<void> {
  const d = await openDisk(disk, { write: true });
  try {
    const esp = await openFatEditor(partitionIo(d, (await probeLayout(d)).esp));
    await esp.rename(`loader/entries/${from}`, to);
  } finally {
    await d.close();
  }
}

/**
 * sgdisk -v on the disk and fsck.fat -n on its ESP (cut out to `espImg`), as a user would check
 * them; `quiet`: fsck.fat must also print no more than its banner. Returns `espImg`.
 */
export async function diskOracles(disk: string, espImg: string, opts: { quiet?: boolean } = {}): Promise<string> {
  needTool('fsck.fat', 'dosfstools');
  needTool('sgdisk', 'gdisk');
  const v = run('sgdisk', ['-v', disk]);
  expect(v.stdout, v.stdout).toMatch(/No problems found/);
  const f = run('fsck.fat', ['-n', await espToFile(disk, espImg)]);
  expect(f.code, f.stdout + f.stderr).toBe(0);
  if (opts.quiet) expect(f.stdout.split('\n').length, f.stdout).toBeLessThanOrEqual(3);
  return espImg;
}
