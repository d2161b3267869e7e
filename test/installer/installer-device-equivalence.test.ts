import { copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loaderConf } from '../../builder/boot/entries.ts';
import { openFatEditor, type FatEditor } from '../../builder/formats/fat/mutate.ts';
import { computeVerity, slotHashOffset } from '../../builder/formats/verity.ts';
import { DEVICE_SCRIPT } from '../../builder/installer/device-script.ts';
import { openDisk, partitionIo } from '../../builder/installer/disk.ts';
import { install } from '../../builder/installer/install.ts';
import { openReleaseDir } from '../../builder/installer/release.ts';
import { upgrade } from '../../builder/installer/upgrade.ts';
import { siteTar, siteTree } from '../../builder/site/data.ts';
import { fakeSquashfs, layoutOf, noise, readRange, sha, writeBuildOutput } from '../helpers/installer-fixtures.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

/**
 * The two upgraders agree: `ossify upgrade` (builder/installer/upgrade.ts, TypeScript on a
 * disk image) and the on-device script (builder/installer/device.sh, run by the host's
 * busybox sh over the same disk's partitions cut out into files, /sys and /proc faked, the
 * ESP's files in a directory as the kernel's vfat driver would show them) leave the same
 * bytes for the same release: both root slots and STATE byte for byte, and the ESP's every
 * directory, file name and file byte. The FAT image itself cannot be compared: on a device
 * the kernel lays out the FAT. The releases use every payload feature the script handles:
 * dm-verity, a boot record (tries, kernel arguments JSON must escape), the shared boot files
 * (systemd-boot, loader.conf), a site seed, and unified kernel images.
 */

const EPOCH = 1_700_000_000;
const work = tempDir('device-equivalence');
afterAll(() => work.cleanup());

interface Spec {
  version: string;
  seed: number;
  uki?: boolean;
  site?: { name: string; hostname: string };
}

/** A build output as `ossify build` writes it (minus disk.raw), with dm-verity and a boot record. */
async function release(r: Spec): Promise<string> {
  const dir = join(work.path, `release-${r.version}-${r.seed}`);
  mkdirSync(dir, { recursive: true });
  const squashfs = fakeSquashfs(70_001 + r.seed * 37, r.seed);
  const used = Number(squashfs.readBigUInt64LE(40));
  const files: Record<string, Buffer> = {
    'rootfs.squashfs': squashfs.subarray(0, used),
    vmlinuz: noise(150_000 + r.seed, r.seed + 1),
    'initramfs.img': noise(40_000 + r.seed, r.seed + 2),
    'systemd-bootx64.efi': noise(80_000 + r.seed, r.seed + 3),
    'loader.conf': Buffer.from(loaderConf({ timeout: 2 })),
  };
  writeFileSync(join(dir, 'rootfs.squashfs'), files['rootfs.squashfs']!);
  const v = await computeVerity(join(dir, 'rootfs.squashfs'), { hashOffset: slotHashOffset(used) });
  files['rootfs.verity'] = Buffer.from(v.tree);
  if (r.uki) for (const slot of ['a', 'b']) files[`uki-${slot}.efi`] = noise(90_000 + r.seed, r.seed + (slot === 'a' ? 5 : 6));
  if (r.site) files['site.tar'] = Buffer.from(await siteTar(await siteTree({ name: r.site.name, hostname: r.site.hostname, env: { STORE: r.site.name } }, EPOCH), EPOCH));
  writeBuildOutput(dir, files, {
    name: 'fake-os',
    version: r.version,
    arch: 'x86_64',
    profileDigest: `sha256:${sha(Buffer.from(`fake profile ${r.site?.name ?? ''}`))}`,
    epoch: EPOCH,
    boot: { entries: r.uki ? 'uki' : 'type1', cmdline: r.uki ? '' : 'console=ttyS0 note="a b" path=C:\\x', timeout: 2, tries: 5 },
    verity: { roothash: v.rootHash, salt: v.salt, hashOffset: v.hashOffset, dataBlocks: v.dataBlocks, dataBlockSize: 4096, hashBlockSize: 4096, algorithm: 'sha256' },
    ...(r.site ? { site: { name: r.site.name } } : {}),
  });
  return dir;
}

/** Every directory (`path/`) and file (`path` → sha256) of a FAT, as a sorted list. */
async function fatTree(esp: FatEditor): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const e of await esp.list(dir)) {
      if (e.isDir) {
        out.push(`${e.path}/`);
        await walk(e.path);
      } else out.push(`${e.path} ${sha(await esp.readFile(e.path))}`);
    }
  };
  await walk('');
  return out.sort();
}

/** The same list for a directory of the host. */
function dirTree(root: string): string[] {
  return (readdirSync(root, { recursive: true }) as string[])
    .map((p) => (statSync(join(root, p)).isDirectory() ? `${p}/` : `${p} ${sha(readFileSync(join(root, p)))}`))
    .sort();
}

/**
 * The disk's running system as the script sees it: each partition a file under dev/ (vda1…),
 * /sys/class/block with their labels and sizes, /proc/cmdline the running entry's arguments
 * (what systemd-boot hands the kernel), and the ESP's files in a directory.
 */
async function deviceOf(disk: string, from: string, name: string) {
  const root = join(work.path, name);
  const layout = await layoutOf(disk);
  for (const d of ['proc', 'dev', 'esp', 'payload/ossify/payload']) mkdirSync(join(root, d), { recursive: true });
  for (const [i, p] of layout.partitions.entries()) {
    const dev = `vda${i + 1}`;
    mkdirSync(join(root, 'sys/class/block', dev), { recursive: true });
    writeFileSync(join(root, 'sys/class/block', dev, 'uevent'), `MAJOR=254\nMINOR=${i + 1}\nDEVNAME=${dev}\nDEVTYPE=partition\nPARTN=${i + 1}\nPARTNAME=${p.label}\n`);
    writeFileSync(join(root, 'sys/class/block', dev, 'size'), `${p.size / 512}\n`);
    writeFileSync(join(root, 'dev', dev), p.label === 'ESP' ? Buffer.alloc(0) : await readRange(disk, p.offset, p.size));
  }
  const d = await openDisk(disk, { write: false });
  let cmdline = '';
  try {
    const esp = await openFatEditor(partitionIo(d, layout.esp));
    for (const entry of await fatTree(esp)) {
      if (entry.endsWith('/')) {
        mkdirSync(join(root, 'esp', entry), { recursive: true });
        continue;
      }
      const path = entry.slice(0, entry.lastIndexOf(' '));
      const bytes = await esp.readFile(path);
      writeFileSync(join(root, 'esp', path), bytes);
      // The slot a system runs from: its Type #1 entry's options, or its UKI's (the slot's own arguments are enough here).
      const m = /^loader\/entries\/ossify-a(\+\d+(-\d+)?)?\.conf$/.exec(path);
      if (m) cmdline = /^options (.*)$/m.exec(Buffer.from(bytes).toString())![1]!;
      if (/^EFI\/Linux\/ossify-\d+-a(\+.*)?\.efi$/.test(path)) cmdline = 'ossify.slot=a ossify.root=ROOT-A';
    }
  } finally {
    await d.close();
  }
  expect(cmdline, 'the installed disk has an entry for slot a').not.toBe('');
  writeFileSync(join(root, 'proc/cmdline'), `${cmdline}\n`);
  writeFileSync(join(root, 'proc/mounts'), '');
  writeFileSync(join(root, 'payload/ossify/install.sh'), DEVICE_SCRIPT);
  const src = await openReleaseDir(from);
  for (const n of Object.keys(src.release.artifacts)) copyFileSync(src.path(n), join(root, 'payload/ossify/payload', n));
  writeFileSync(join(root, 'payload/ossify/payload/release.json'), src.releaseJson);
  const env = { OSSIFY_ROOT: join(root, 'payload'), OSSIFY_BUSYBOX: '/usr/bin/busybox', OSSIFY_PROC: join(root, 'proc'), OSSIFY_SYS: join(root, 'sys'), OSSIFY_DEV: join(root, 'dev'), OSSIFY_ESP_DIR: join(root, 'esp'), OSSIFY_MACHINE: 'x86_64' };
  const sh = (args: string[]) => run('busybox', ['sh', join(root, 'payload/ossify/install.sh'), ...args], { env });
  return { root, sh, layout };
}

/** Installs `from`, then upgrades it to `to` both ways; expects the same slots, STATE and ESP files. */
async function bothWays(name: string, from: string, to: string) {
  needTool('busybox', 'busybox');
  const disk = join(work.path, `${name}.raw`);
  await install({ disk, source: await openReleaseDir(from), cacheDir: join(work.path, 'cache') });
  const device = await deviceOf(disk, to, `${name}-device`);
  const before = dirTree(join(device.root, 'esp'));

  const offline = await upgrade({ disk, source: await openReleaseDir(to) });
  const r = device.sh(['upgrade']);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toContain(`slot b boots next with 5 tries: fake-os 2.0.0 (entry generation ${offline.generation})`);

  for (const [i, p] of device.layout.partitions.entries()) {
    if (p.label === 'ESP') continue;
    expect(sha(readFileSync(join(device.root, 'dev', `vda${i + 1}`))), p.label).toBe(sha(await readRange(disk, p.offset, p.size)));
  }
  const d = await openDisk(disk, { write: false });
  try {
    const ts = await fatTree(await openFatEditor(partitionIo(d, device.layout.esp)));
    const sh = dirTree(join(device.root, 'esp'));
    expect(sh).toEqual(ts);
    // Not vacuous: the upgrade changed the ESP.
    expect(sh).not.toEqual(before);
    return { ts, offline, state: readFileSync(join(device.root, 'dev', `vda${device.layout.partitions.findIndex((p) => p.label === 'STATE') + 1}`)) };
  } finally {
    await d.close();
  }
}

let t1: string;
let t2: string;
let u1: string;
let u2: string;

beforeAll(async () => {
  t1 = await release({ version: '1.0.0', seed: 61, site: { name: 'site-1', hostname: 'site-1.fleet.test' } });
  t2 = await release({ version: '2.0.0', seed: 62, site: { name: 'site-1', hostname: 'till-1.fleet.test' } });
  u1 = await release({ version: '1.0.0', seed: 71, uki: true });
  u2 = await release({ version: '2.0.0', seed: 72, uki: true });
});

describe('ossify upgrade and the on-device script', () => {
  it('leave the same slots, STATE and ESP files: Type #1 entries, dm-verity, boot record and files, site data', async () => {
    const { ts, offline, state } = await bothWays('type1', t1, t2);
    const seed = readFileSync(join(t2, 'site.tar'));
    expect(state.subarray(0, seed.length).equals(seed)).toBe(true);
    expect(offline).toMatchObject({ slot: 'b', entryFile: 'ossify-b+5.conf' });
    expect(ts).toContain(`EFI/systemd/systemd-bootx64.efi ${sha(readFileSync(join(t2, 'systemd-bootx64.efi')))}`);
    expect(ts.some((f) => f.startsWith('loader/entries/ossify-b+5.conf '))).toBe(true);
  });

  it('leave the same slots, STATE and ESP files: unified kernel images', async () => {
    const { ts, offline } = await bothWays('uki', u1, u2);
    expect(offline).toMatchObject({ slot: 'b', entryFile: `ossify-${offline.generation}-b+5.efi` });
    expect(ts).toContain(`EFI/Linux/ossify-${offline.generation}-b+5.efi ${sha(readFileSync(join(u2, 'uki-b.efi')))}`);
  });
});

