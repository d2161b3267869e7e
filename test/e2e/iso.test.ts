import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readIso } from '../../builder/formats/iso9660.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { buildProfile, diskStatus, ossify, ossifyOk, PROJECT_ROOT, slotOf } from '../helpers/cli.ts';
import { needTool, run } from '../helpers/oracle-formats.ts';
import { readRange } from '../helpers/installer-fixtures.ts';

/**
 * The installer ISO of the default profile: its structure read by xorriso, isoinfo, sgdisk,
 * fdisk and mtools; two builds write the same bytes; and three boots under QEMU + OVMF (TCG):
 * `ossify run disk.iso --disk blank.raw` installs to the blank disk and the reset boots
 * slot A from it; with no disk, or with the live entry (ossify.live=1) and a blank disk, the
 * console says why it does not install and the release boots live from memory (its init
 * prints slot=live); an ossify.install= disk too small is refused. No refused disk is written.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const MiB = 1 << 20;
let out: string;
let dirA: string;
let iso: string;

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

async function allZero(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4 * MiB);
    for (let pos = 0; ; pos += buf.length) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) return true;
      if (buf.subarray(0, bytesRead).some((b) => b !== 0)) return false;
    }
  } finally {
    await fh.close();
  }
}

function blankDisk(name: string, size: number): string {
  const path = join(out, name);
  writeFileSync(path, '');
  truncateSync(path, size);
  return path;
}

/**
 * A copy of the ISO whose boot image has other loader files (mtools writes into the FAT in
 * place): a test's way of typing kernel arguments into the boot menu.
 */
async function isoWith(name: string, edit: Record<string, (text: string) => string>): Promise<string> {
  const copy = join(out, name);
  copyFileSync(iso, copy);
  const img = (await readIso((o, n) => readRange(copy, o, n))).entries.find((e) => e.path === 'BOOT/EFI.IMG')!;
  const fat = `${copy}@@${img.block * 2048}`;
  for (const [path, change] of Object.entries(edit)) {
    const old = run('mtype', ['-i', fat, `::/${path}`]);
    expect(old.code, old.stderr).toBe(0);
    const local = join(out, `${name}.file`);
    writeFileSync(local, change(old.stdout));
    const r = run('mcopy', ['-o', '-i', fat, local, `::/${path}`]);
    expect(r.code, r.stderr).toBe(0);
  }
  return copy;
}

describe('the installer ISO', () => {
  beforeAll(async () => {
    for (const [tool, pkg] of [
      ['xorriso', 'xorriso'],
      ['isoinfo', 'genisoimage'],
      ['sgdisk', 'gdisk'],
      ['fdisk', 'fdisk'],
      ['mdir', 'mtools'],
      ['fsck.fat', 'dosfstools'],
      ['qemu-system-x86_64', 'qemu-system-x86'],
    ] as const) {
      needTool(tool, pkg);
    }
    out = await mkdtemp(join(tmpdir(), 'ossify-e2e-iso-'));
    dirA = await buildProfile('profiles/default.yaml', join(out, 'a'), CACHE);
    const r = await ossifyOk(['iso', dirA, '--json']);
    iso = (JSON.parse(r.stdout) as { path: string }).path;
  }, 900_000);

  afterAll(async () => {
    if (out) await rm(out, { recursive: true, force: true });
  });

  it('is a hybrid El Torito UEFI image that xorriso, isoinfo, sgdisk, fdisk and mtools read', async () => {
    const x = run('xorriso', ['-indev', iso, '-report_el_torito', 'plain', '-report_system_area', 'plain']);
    expect(x.code, x.stderr).toBe(0);
    expect(x.stdout).toMatch(/El Torito boot img :\s+1\s+UEFI\s+y\s+none/);
    expect(x.stdout).toMatch(/El Torito img path :\s+1\s+\/BOOT\/EFI.IMG/);
    expect(x.stdout).toMatch(/GPT partition path :\s+1\s+\/BOOT\/EFI.IMG/);
    const d = run('isoinfo', ['-d', '-i', iso]);
    expect(d.stdout).toMatch(/Volume id: OSSIFY_DEFAULT_1_0_0/);
    expect(d.stdout).toMatch(/Boot media 0 \(No Emulation Boot\)/);
    expect(run('sgdisk', ['-v', iso]).stdout).toMatch(/No problems found/);
    expect(run('fdisk', ['-l', iso]).stdout).toMatch(/EFI System/);

    // The boot image (the GPT's ESP) holds systemd-boot, the two entries and the four initrds.
    const vol = await readIso((o, n) => readRange(iso, o, n));
    const img = vol.entries.find((e) => e.path === 'BOOT/EFI.IMG')!;
    const efi = join(out, 'efi.img');
    writeFileSync(efi, readFileSync(iso).subarray(img.block * 2048, img.block * 2048 + img.size));
    expect(run('fsck.fat', ['-n', efi]).code).toBe(0);
    const entry = run('mtype', ['-i', efi, '::/loader/entries/ossify-install.conf']);
    expect(entry.code, entry.stderr).toBe(0);
    expect(entry.stdout).toMatch(/^linux \/ossify\/vmlinuz$/m);
    const initrds = ['initrd /ossify/initrd.img', 'initrd /ossify/install.img', 'initrd /ossify/payload.img', 'initrd /ossify/live.img'];
    expect(entry.stdout.match(/^initrd .*$/gm)).toEqual(initrds);
    expect(entry.stdout).not.toMatch(/ossify\.live/);
    const live = run('mtype', ['-i', efi, '::/loader/entries/ossify-live.conf']);
    expect(live.stdout).toMatch(/^title ossify-default 1\.0\.0 \(live, no install\)$/m);
    expect(live.stdout.match(/^initrd .*$/gm)).toEqual(initrds);
    expect(live.stdout).toMatch(/^options .* ossify\.live=1$/m);
    expect(run('mtype', ['-i', efi, '::/loader/loader.conf']).stdout).toMatch(/^default ossify-install\.conf$/m);
    expect(run('mdir', ['-i', efi, '-b', '::/EFI/BOOT']).stdout).toMatch(/BOOTX64.EFI/);
  });

  it('is the same bytes from a second build', async () => {
    const dirB = await buildProfile('profiles/default.yaml', join(out, 'b'), CACHE);
    const isoB = join(out, 'b.iso');
    await ossifyOk(['iso', dirB, '-o', isoB]);
    expect(sha256(isoB)).toBe(sha256(iso));
  }, 600_000);

  it('installs to a blank disk, which then boots slot A (ossify run with the ISO and --disk)', async () => {
    const blank = blankDisk('blank.raw', 1024 * MiB);
    const r = await ossify(['run', iso, '--disk', blank, '--timeout', '400', '--expect', 'OSSIFY-BOOT name=ossify-default version=1\\.0\\.0 slot=a']);
    expect(r.exitCode, r.stdout.slice(-6000)).toBe(0);
    expect(r.stdout).toMatch(/ossify-install: installed ossify-default 1\.0\.0 on \/dev\/vda \(partitions: ESP ROOT-A ROOT-B STATE\); rebooting into slot A/);
    // The GPT the installer computed in shell for a 1 GiB disk: backup at the end, CRCs right.
    const sg = run('sgdisk', ['-v', blank]);
    expect(sg.stdout).toMatch(/No problems found/);
    expect(run('sgdisk', ['-p', blank]).stdout).toMatch(/last usable sector is 2097118/);
    const s = await diskStatus(blank);
    expect(slotOf(s, 'a').release?.version).toBe('1.0.0');
  }, 600_000);

  const LIVE_BOOT = /OSSIFY-BOOT name=ossify-default version=1\.0\.0 slot=live|ossify-install: powering off/;
  const BOOTED_LIVE = /ossify-install: booting ossify-default 1\.0\.0 live from memory; nothing was written[\s\S]*OSSIFY-BOOT name=ossify-default version=1\.0\.0 slot=live/;

  it('refuses an ossify.install= disk too small for the layout and leaves it untouched', async () => {
    const small = blankDisk('small.raw', 256 * MiB);
    const variant = await isoWith('explicit.iso', {
      'loader/entries/ossify-install.conf': (t) => t.replace(/^options (.*)$/m, 'options $1 ossify.install=/dev/vda ossify.install.hold=1'),
    });
    const r = await runDisk({ disk: small, cdrom: variant, timeout: 300, expect: /ossify-install: powering off|OSSIFY-BOOT/, stopOnMatch: true });
    expect(r.matched, r.log.slice(-4000)).toBe(true);
    expect(r.log).toMatch(/ossify-install: \/dev\/vda is too small: 268435456 bytes \(256 MiB\), ossify-default 1\.0\.0 needs 706740224 bytes \(674 MiB\)/);
    expect(r.log).toMatch(/ossify-install: no disk was written/);
    expect(r.log).not.toMatch(/OSSIFY-BOOT/);
    expect(await allZero(small)).toBe(true);
  }, 400_000);

  it('boots live with ossify.live=1 (the live entry) even when an empty disk would take the install', async () => {
    const blank = blankDisk('live-blank.raw', 1024 * MiB);
    const variant = await isoWith('live.iso', { 'loader/loader.conf': () => 'timeout 0\ndefault ossify-live.conf\n' });
    const r = await runDisk({ disk: blank, cdrom: variant, timeout: 300, expect: LIVE_BOOT, stopOnMatch: true });
    expect(r.matched, r.log.slice(-4000)).toBe(true);
    expect(r.log).toMatch(/ossify-install: ossify\.live=1: not installing/);
    expect(r.log).toMatch(BOOTED_LIVE);
    expect(await allZero(blank)).toBe(true);
  }, 400_000);

  it('boots the release live when the machine has no disk, saying why it does not install', async () => {
    const r = await runDisk({ cdrom: iso, timeout: 300, expect: LIVE_BOOT, stopOnMatch: true });
    expect(r.matched, r.log.slice(-4000)).toBe(true);
    expect(r.log).toMatch(/ossify-install: no disk to install to: this machine shows no disk/);
    expect(r.log).toMatch(BOOTED_LIVE);
  }, 400_000);
});
