import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readUki } from '../../builder/boot/uki.ts';
import { openFatEditor } from '../../builder/formats/fat/mutate.ts';
import { openDisk, partitionIo } from '../../builder/installer/disk.ts';
import { probeLayout } from '../../builder/installer/layout.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { buildProfile, buildRecord, diskStatus, ossify, ossifyOk, PROJECT_ROOT, slotOf } from '../helpers/cli.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';
import { needTool, run as runFormatTool } from '../helpers/oracle-formats.ts';
import { startRegistry } from '../helpers/registry.ts';

/**
 * Unified kernel images and Secure Boot end to end: profiles/test/uki.yaml builds
 * one UKI per slot (boot.entries: uki) from systemd's linuxx64.efi.stub; objdump reads its
 * sections, QEMU boots it, the installer upgrades and rolls back UKI slots with boot counting
 * in the file name, and a Secure Boot build (keys made by `ossify keygen --secure-boot` in a
 * temporary directory) is checked by sbverify and booted with the Secure Boot OVMF, where an
 * unsigned UKI in its place is refused by the firmware.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const BOOT_TIMEOUT = 150;
let out: string;
let u1: string;
let u2: string;
let sb: string;
let sb2: string;
let keys: string;

const build = (profile: string) => buildProfile(profile, out, CACHE);
const cli = (args: string[]) => ossifyOk(args);
const record = buildRecord;
const status = diskStatus;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Runs `fn` on the ESP of a disk image. */
async function withEsp<T>(disk: string, write: boolean, fn: (esp: Awaited<ReturnType<typeof openFatEditor>>) => Promise<T>): Promise<T> {
  const d = await openDisk(disk, { write });
  try {
    return await fn(await openFatEditor(partitionIo(d, (await probeLayout(d)).esp)));
  } finally {
    await d.close();
  }
}

async function boot(disk: string, expect: RegExp) {
  const r = await runDisk({ disk, expect, timeout: BOOT_TIMEOUT });
  if (!r.matched) throw new Error(`no /${expect.source}/ within ${BOOT_TIMEOUT} s; serial log:\n${r.log.slice(-6000)}`);
  return r;
}

beforeAll(async () => {
  requireTool('qemu-system-x86_64', 'qemu-system-x86');
  requireTool('objdump', 'binutils');
  requireTool('sbverify', 'sbsigntool');
  requireTool('openssl', 'openssl');
  out = await mkdtemp(join(tmpdir(), 'ossify-e2e-uki-'));
  keys = join(out, 'keys');
  await cli(['keygen', '--secure-boot', keys, '--common-name', 'ossify e2e']);
  const sbProfile = join(out, 'uki-sb.yaml');
  writeFileSync(sbProfile, `extends: ${JSON.stringify(join(PROJECT_ROOT, 'profiles/test/uki.yaml'))}\nname: ossify-uki-sb\nboot:\n  secureBoot:\n    keys: keys\n`);
  const sbProfile2 = join(out, 'uki-sb-v2.yaml');
  writeFileSync(sbProfile2, `extends: ${JSON.stringify(join(PROJECT_ROOT, 'profiles/test/uki-v2.yaml'))}\nname: ossify-uki-sb\nboot:\n  secureBoot:\n    keys: keys\n`);
  [u1, u2, sb, sb2] = await Promise.all([build('profiles/test/uki.yaml'), build('profiles/test/uki-v2.yaml'), build(sbProfile), build(sbProfile2)]);
}, 600_000);

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

describe('unified kernel images', () => {
  it('objdump -h shows the stub and .osrel .cmdline .uname .initrd .linux; each slot’s command line names it and pins the verity root', async () => {
    const b = record(u1);
    expect(b.boot).toEqual({ entries: 'uki', cmdline: 'console=ttyS0 panic=5 loglevel=4', timeout: 0, tries: 3 });
    for (const slot of ['a', 'b'] as const) {
      const path = join(u1, `uki-${slot}.efi`);
      const names = runOk('objdump', ['-h', path])
        .split('\n')
        .map((l) => /^\s*\d+\s+(\S+)\s/.exec(l)?.[1])
        .filter((n): n is string => n !== undefined);
      expect(names.slice(0, 2)).toContain('.text');
      expect(names).toContain('.sdmagic');
      expect(names.slice(-5)).toEqual(['.osrel', '.cmdline', '.uname', '.initrd', '.linux']);
      const u = readUki(readFileSync(path));
      expect(u.cmdline).toContain(`ossify.slot=${slot} ossify.root=ROOT-${slot.toUpperCase()} ossify.verity=${b.verity!.roothash} `);
      expect(u.cmdline).toContain('console=ttyS0');
      expect(u.uname).toBe(b.kernelVersion);
      expect(u.osRelease).toContain('ID=ossify\n');
      expect(u.osRelease).toContain(`PRETTY_NAME="ossify-uki 1.0.0 (slot ${slot})"`);
      // No version field: the file name (which starts with the generation) orders Type #2 entries.
      expect(u.osRelease).not.toMatch(/^(IMAGE_VERSION|VERSION|VERSION_ID|BUILD_ID)=/m);
      expect(Buffer.from(u.linux!).equals(readFileSync(join(u1, 'vmlinuz')))).toBe(true);
      expect(Buffer.from(u.initrd!).equals(readFileSync(join(u1, 'initramfs.img')))).toBe(true);
    }
    const esp = await withEsp(join(u1, 'disk.raw'), false, async (e) => ({
      linux: (await e.list('EFI/Linux')).map((f) => f.name),
      uki: sha(await e.readFile('EFI/Linux/ossify-1-a.efi')),
      entries: (await e.stat('loader/entries')) ? (await e.list('loader/entries')).map((f) => f.name) : [],
      slotA: (await e.list('ossify/a')).map((f) => f.name),
    }));
    expect(esp).toEqual({ linux: ['ossify-1-a.efi'], uki: b.artifacts['uki-a.efi']!.sha256.replace(/^sha256:/, ''), entries: [], slotA: [] });
  });

  it('boots; an upgrade adds slot b’s UKI on trial, which boots and is blessed; a rollback renames slot a’s UKI to a newer generation', async () => {
    const disk = join(out, 'uki.raw');
    copyFileSync(join(u1, 'disk.raw'), disk);
    // Installing the build output gives the build's disk, byte for byte, UKI and all.
    const installed = join(out, 'installed.raw');
    await cli(['install', '--from', u1, '--disk', installed]);
    expect(sha(readFileSync(installed))).toBe(record(u1).artifacts['disk.raw']!.sha256.replace(/^sha256:/, ''));
    await rm(installed);

    await cli(['upgrade', '--from', u2, '--disk', disk]);
    const trial = await status(disk);
    expect(trial.bootOrder).toEqual(['ossify-2-b+3.efi', 'ossify-1-a.efi']);
    expect(slotOf(trial, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'trying', triesLeft: 3, generation: 2 }, release: { version: '2.0.0', verified: true }, verity: { roothash: record(u2).verity!.roothash, verified: true } });
    await withEsp(disk, false, async (e) => {
      expect(sha(await e.readFile('EFI/Linux/ossify-2-b+3.efi'))).toBe(record(u2).artifacts['uki-b.efi']!.sha256.replace(/^sha256:/, ''));
      expect((await e.list('ossify/b')).map((f) => f.name)).toEqual(['release.json']);
    });

    await boot(disk, /OSSIFY-BOOT name=ossify-uki version=2\.0\.0 slot=b/);
    const blessed = await status(disk);
    expect(blessed.bootOrder).toEqual(['ossify-2-b.efi', 'ossify-1-a.efi']);
    expect(slotOf(blessed, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'good', file: 'ossify-2-b.efi' } });

    const rb = JSON.parse((await cli(['rollback', '--disk', disk, '--json'])).stdout) as { to: string; entryFile: string };
    expect(rb).toMatchObject({ to: 'a', entryFile: 'ossify-3-a.efi' });
    expect((await status(disk)).bootOrder).toEqual(['ossify-3-a.efi', 'ossify-2-b.efi']);
    await boot(disk, /OSSIFY-BOOT name=ossify-uki version=1\.0\.0 slot=a/);
  }, 400_000);

  it('Secure Boot: sbverify accepts the signed systemd-boot and UKIs; enforced, the signed image boots and an unsigned UKI does not', async () => {
    const db = join(keys, 'db.crt');
    const b = record(sb);
    expect(b.boot).toEqual({ entries: 'uki', cmdline: 'console=ttyS0 panic=5 loglevel=4', timeout: 0, tries: 3, secureBoot: { enroll: 'force' } });
    const bootx64 = join(out, 'BOOTX64.EFI');
    await withEsp(join(sb, 'disk.raw'), false, async (e) => {
      writeFileSync(bootx64, await e.readFile('EFI/BOOT/BOOTX64.EFI'));
      expect((await e.list('loader/keys/auto')).map((f) => f.name).sort()).toEqual(['KEK.auth', 'PK.auth', 'db.auth']);
      expect(Buffer.from(await e.readFile('loader/loader.conf')).toString()).toContain('secure-boot-enroll force\n');
    });
    for (const f of [bootx64, join(sb, 'uki-a.efi'), join(sb, 'uki-b.efi')]) {
      const r = run('sbverify', ['--cert', db, f]);
      expect(r.stdout + r.stderr, f).toMatch(/Signature verification OK/);
      expect(r.code).toBe(0);
    }
    expect(run('sbverify', ['--cert', db, join(u1, 'uki-a.efi')]).code).not.toBe(0);

    // First boot in setup mode: systemd-boot enrols PK, KEK and db and resets; then Secure Boot is enforced.
    const ok = await ossify(['run', join(sb, 'disk.raw'), '--secure-boot', '--snapshot', '--timeout', '240', '--expect', 'OSSIFY-BOOT name=ossify-uki-sb version=1\\.0\\.0 slot=a']);
    const log = ok.stdout;
    expect(ok.exitCode, log.slice(-4000)).toBe(0);
    expect(log).toMatch(/Enrolling secure boot keys from directory: \\loader\\keys\\auto/);
    expect(log).toMatch(/EFI stub: UEFI Secure Boot is enabled|secureboot: Secure boot enabled/);

    // The same disk with slot a's UKI swapped for the unsigned one: the firmware refuses it.
    const unsigned = join(out, 'unsigned.raw');
    copyFileSync(join(sb, 'disk.raw'), unsigned);
    await withEsp(unsigned, true, async (e) => {
      const st = await e.stat('EFI/Linux/ossify-1-a.efi');
      await e.replaceFile('EFI/Linux/ossify-1-a.efi', readFileSync(join(u1, 'uki-a.efi')), { mtime: st!.mtime });
    });
    const denied = await runDisk({
      disk: unsigned,
      secureBoot: true,
      snapshot: true,
      expect: /Error loading \\EFI\\Linux\\ossify-1-a\.efi: (Access Denied|Security Violation)/,
      stopOnMatch: true,
      timeout: 120,
    });
    expect(denied.log).toMatch(/Enrolling secure boot keys/);
    expect(denied.matched, denied.log.slice(-3000)).toBe(true);
    expect(denied.log).not.toContain('OSSIFY-BOOT');
  }, 400_000);

  it('Secure Boot from a registry: a disk installed from the image has the signed systemd-boot and keys, enrols them and boots enforced; so does an upgrade from the next image', async () => {
    needTool('mcopy', 'mtools');
    needTool('fsck.fat', 'dosfstools');
    const reg = await startRegistry();
    try {
      const push = async (dir: string, tag: string) => (await cli(['push', dir, `${reg.host}/ossify/uki-sb:${tag}`, '--insecure'])).stdout.trim().split('\n').pop()!;
      const [ref1, ref2] = [await push(sb, '1.0.0'), await push(sb2, '2.0.0')];
      expect(ref1).toMatch(/@sha256:[0-9a-f]{64}$/);
      const disk = join(out, 'sb-from-image.raw');
      await cli(['install', '--image', ref1, '--insecure', '--disk', disk]);
      // The oracles look at the installed ESP the way a user would: cut it out, mcopy the boot loader, sbverify it, fsck.fat it.
      const espOf = async (name: string) => {
        const d = await openDisk(disk, { write: false });
        const esp = (await probeLayout(d)).esp;
        const img = join(out, `${name}.esp`);
        writeFileSync(img, await d.read(esp.offset, esp.size));
        await d.close();
        const f = runFormatTool('fsck.fat', ['-n', img]);
        expect(f.code, f.stdout + f.stderr).toBe(0);
        for (const path of ['EFI/BOOT/BOOTX64.EFI', 'loader/keys/auto/db.auth', 'loader/loader.conf']) {
          const r = runFormatTool('mcopy', ['-n', '-o', '-i', img, `::/${path}`, join(out, `${name}-${path.split('/').pop()}`)]);
          expect(r.code, r.stderr).toBe(0);
        }
        const v = run('sbverify', ['--cert', join(keys, 'db.crt'), join(out, `${name}-BOOTX64.EFI`)]);
        expect(v.stdout + v.stderr).toMatch(/Signature verification OK/);
        expect(readFileSync(join(out, `${name}-loader.conf`), 'utf8')).toContain('secure-boot-enroll force\n');
        return img;
      };
      await espOf('sb-installed');
      // Setup mode: systemd-boot enrols the keys from the installed ESP and resets; then the firmware enforces Secure Boot.
      const first = await runDisk({ disk, secureBoot: true, snapshot: true, expect: /OSSIFY-BOOT name=ossify-uki-sb version=1\.0\.0 slot=a/, stopOnMatch: true, timeout: 40 });
      expect(first.matched, first.log.slice(-4000)).toBe(true);
      expect(first.log).toMatch(/Enrolling secure boot keys from directory: \\loader\\keys\\auto/);
      expect(first.log).toMatch(/EFI stub: UEFI Secure Boot is enabled|secureboot: Secure boot enabled/);

      await cli(['upgrade', '--image', ref2, '--insecure', '--disk', disk]);
      await espOf('sb-upgraded');
      const second = await runDisk({ disk, secureBoot: true, snapshot: true, expect: /OSSIFY-BOOT name=ossify-uki-sb version=2\.0\.0 slot=b/, stopOnMatch: true, timeout: 40 });
      expect(second.matched, second.log.slice(-4000)).toBe(true);
      expect(second.log).toMatch(/EFI stub: UEFI Secure Boot is enabled|secureboot: Secure boot enabled/);
    } finally {
      await reg.stop();
    }
  }, 180_000);
});
