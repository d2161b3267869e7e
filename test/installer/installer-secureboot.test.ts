import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loaderConf } from '../../builder/boot/entries.ts';
import { generateSecureBootKeys } from '../../builder/boot/secureboot/index.ts';
import { enrollmentFiles, loadSecureBootKeys, signWithDb, type SecureBootKeySet } from '../../builder/boot/secureboot/profile.ts';
import { openFatEditor } from '../../builder/formats/fat/mutate.ts';
import { mergedLoaderConf } from '../../builder/installer/boot-files.ts';
import { DEVICE_SCRIPT } from '../../builder/installer/device-script.ts';
import { openDisk, partitionIo } from '../../builder/installer/disk.ts';
import { probeLayout } from '../../builder/installer/layout.ts';
import { openReleaseDir } from '../../builder/installer/release.ts';
import { diskStatus } from '../../builder/installer/status.ts';
import { CRASH_ENV } from '../../builder/installer/steps.ts';
import { pushBuild, type PushResult } from '../../builder/release/push.ts';
import { ossify } from '../helpers/cli.ts';
import { diskOracles, espToFile, fakeSquashfs, noise, sha, writeBuildOutput } from '../helpers/installer-fixtures.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';
import { fakeStaticElf, startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * Secure Boot releases through the installer image: the payload carries the ESP's
 * shared boot files (systemd-boot signed with the db key, loader.conf with secure-boot-enroll,
 * loader/keys/auto/{PK,KEK,db}.auth), `install --image` writes them as the build's disk.raw has
 * them, `upgrade` replaces them file by file without ever leaving a torn or untrusted boot
 * loader, and refuses changes a firmware that enforces Secure Boot could not follow. Oracles:
 * sbverify against the db certificate on files mcopy takes off the installed ESP, fsck.fat -n,
 * sgdisk -v. Releases are small and synthetic but their PE files are real: Debian's
 * systemd-boot and systemd-stub, signed by the same code a build uses.
 * test/e2e/uki.test.ts boots a disk installed from a registry under the Secure Boot OVMF.
 */

const MiB = 1 << 20;
const EPOCH = 1_700_000_000;
const SD_BOOT = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
const STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const work = tempDir('installer-sb');
afterAll(() => work.cleanup());

/** The same PE with one byte of its DOS-stub message changed: another build of the program. */
function variant(path: string, n: number): Buffer {
  const b = readFileSync(path);
  const at = b.indexOf('DOS mode');
  if (at < 0) throw new Error(`${path} has no DOS stub message`);
  b[at] = 0x41 + (n % 26);
  return b;
}

interface SbRelease {
  version: string;
  seed: number;
  /** Sign with these keys; none: an unsigned UKI release. */
  keys?: SecureBootKeySet;
  enroll?: 'force' | 'off';
  /** false: a release made before the payload carried the ESP's boot files. */
  bootFiles?: boolean;
  epoch?: number;
}

interface Made {
  dir: string;
  boot: Buffer;
  loaderConf: string;
  auth: Record<'PK' | 'KEK' | 'db', Uint8Array> | undefined;
  uki: Record<'a' | 'b', Buffer>;
}

/** A UKI build output as `ossify build` writes it (no disk.raw), with its boot files as the disk step makes them. */
async function sbRelease(r: SbRelease): Promise<Made> {
  const dir = join(work.path, `sb-${r.version}-${r.seed}`);
  mkdirSync(dir, { recursive: true });
  const epoch = r.epoch ?? EPOCH;
  const profileDigest = `sha256:${sha(Buffer.from(`sb profile ${r.seed}`))}`;
  const sign = async (b: Buffer) => (r.keys ? Buffer.from(await signWithDb(b, r.keys)) : b);
  const uki = { a: await sign(variant(STUB, r.seed * 2)), b: await sign(variant(STUB, r.seed * 2 + 1)) };
  const boot = await sign(variant(SD_BOOT, r.seed));
  const enroll = r.keys ? (r.enroll ?? 'force') : undefined;
  const auth = r.keys && enroll !== 'off' ? enrollmentFiles(r.keys, profileDigest, epoch) : undefined;
  const conf = loaderConf({ timeout: 0, ...(enroll && enroll !== 'off' ? { secureBootEnroll: enroll } : {}) });
  const files: Record<string, Uint8Array> = {
    'rootfs.squashfs': fakeSquashfs(60_000 + r.seed, r.seed),
    vmlinuz: noise(50_000 + r.seed, r.seed + 1),
    'initramfs.img': noise(40_000 + r.seed, r.seed + 2),
    'uki-a.efi': uki.a,
    'uki-b.efi': uki.b,
    ...(r.bootFiles === false ? {} : { 'systemd-bootx64.efi': boot, 'loader.conf': Buffer.from(conf), ...(auth ? { 'PK.auth': auth.PK, 'KEK.auth': auth.KEK, 'db.auth': auth.db } : {}) }),
  };
  // The boot record as a build writes it; a release without boot files is one from before either existed.
  const record = { entries: 'uki', cmdline: 'console=ttyS0', timeout: 0, tries: 3, ...(enroll ? { secureBoot: { enroll } } : {}) };
  writeBuildOutput(dir, files, { name: 'sb-os', version: r.version, arch: 'x86_64', profileDigest, epoch, boot: r.bootFiles === false ? { entries: 'uki', secureBoot: r.keys !== undefined } : record });
  return { dir, boot, loaderConf: conf, auth, uki };
}

async function cli(args: string[], env?: Record<string, string>) {
  const r = await ossify(args, env ? { env } : {});
  return { ...r, all: `${r.stdout}\n${r.stderr}` };
}

async function ok(args: string[]) {
  const r = await cli(args);
  if (r.exitCode !== 0) throw new Error(`ossify ${args.join(' ')} exited ${r.exitCode}:\n${r.stderr}`);
  return r;
}

/** The ESP of a disk image cut out into a file of its own, for mtools and fsck.fat. */
const espImage = (disk: string, name: string) => espToFile(disk, join(work.path, `${name}.esp.img`));

/** mcopy one file off an ESP image. */
function mcopy(img: string, path: string, out: string): Buffer {
  needTool('mcopy', 'mtools');
  const r = run('mcopy', ['-n', '-o', '-i', img, `::/${path}`, out]);
  expect(r.code, r.stderr).toBe(0);
  return readFileSync(out);
}

function sbverify(file: string, cert: string) {
  needTool('sbverify', 'sbsigntool');
  const r = run('sbverify', ['--cert', cert, file]);
  return { ok: r.code === 0 && /Signature verification OK/.test(r.stdout + r.stderr), out: r.stdout + r.stderr };
}

/** fsck.fat -n on the ESP (with nothing to say) and sgdisk -v on the disk; the ESP's image file. */
const oracles = (disk: string, name: string) => diskOracles(disk, join(work.path, `${name}.esp.img`), { quiet: true });

/** Every file on the ESP with its sha256, through the FAT editor. */
async function espFiles(disk: string): Promise<Record<string, string>> {
  const d = await openDisk(disk, { write: false });
  try {
    const esp = await openFatEditor(partitionIo(d, (await probeLayout(d)).esp));
    const out: Record<string, string> = {};
    const walk = async (dir: string): Promise<void> => {
      for (const e of await esp.list(dir)) {
        if (e.isDir) await walk(e.path);
        else out[e.path] = sha(await esp.readFile(e.path));
      }
    };
    await walk('');
    return out;
  } finally {
    await d.close();
  }
}

async function espProblems(disk: string) {
  const d = await openDisk(disk, { write: false });
  try {
    return await (await openFatEditor(partitionIo(d, (await probeLayout(d)).esp))).check();
  } finally {
    await d.close();
  }
}

const fileSha = (p: string) => sha(readFileSync(p));

let k1: SecureBootKeySet;
let k2: SecureBootKeySet;
let db1: string;
let r1: Made;
let r2: Made;
let rOther: Made;
let rUnsigned1: Made;
let rUnsigned2: Made;
let rOff: Made;
let rOld: Made;
let rOld2: Made;
let reg: RegistryHandle;
const pushed: Record<string, PushResult> = {};

beforeAll(async () => {
  needTool('openssl', 'openssl');
  if (!existsSync(SD_BOOT) || !existsSync(STUB)) throw new Error(`${SD_BOOT} or ${STUB} is missing: apt-get install systemd-boot-efi`);
  await generateSecureBootKeys(join(work.path, 'k1'), { commonName: 'ossify sb test' });
  await generateSecureBootKeys(join(work.path, 'k2'), { commonName: 'ossify other' });
  k1 = await loadSecureBootKeys(join(work.path, 'k1'));
  k2 = await loadSecureBootKeys(join(work.path, 'k2'));
  db1 = join(work.path, 'k1', 'db.crt');
  r1 = await sbRelease({ version: '1.0.0', seed: 1, keys: k1 });
  // A newer systemd-boot, the same keys, another epoch: every boot file differs from r1's.
  r2 = await sbRelease({ version: '2.0.0', seed: 2, keys: k1, epoch: EPOCH + 86_400 });
  rOther = await sbRelease({ version: '2.0.0', seed: 3, keys: k2 });
  rUnsigned1 = await sbRelease({ version: '1.0.0', seed: 4 });
  rUnsigned2 = await sbRelease({ version: '2.0.0', seed: 5 });
  rOff = await sbRelease({ version: '2.0.0', seed: 6, keys: k1, enroll: 'off' });
  rOld = await sbRelease({ version: '1.0.0', seed: 7, keys: k1, bootFiles: false });
  rOld2 = await sbRelease({ version: '3.0.0', seed: 8, keys: k1, bootFiles: false });
  reg = await startRegistry();
  const busybox = fakeStaticElf(62);
  for (const [tag, m] of Object.entries({ r1, r2, rOld, rOld2 })) pushed[tag] = await pushBuild(m.dir, `${reg.host}/ossify/sb:${tag}`, { insecure: true, busybox, blobCache: false });
}, 120_000);

afterAll(async () => {
  await reg?.stop();
});

describe('Secure Boot through the installer image', () => {
  it('the payload lists systemd-boot, loader.conf and the .auth files; install --image writes them as the build’s disk has them: sbverify, fsck.fat', async () => {
    const src = await openReleaseDir(r1.dir);
    expect(Object.keys(src.release.artifacts).sort()).toEqual(['KEK.auth', 'PK.auth', 'db.auth', 'initramfs.img', 'loader.conf', 'rootfs.squashfs', 'systemd-bootx64.efi', 'uki-a.efi', 'uki-b.efi', 'vmlinuz']);

    const disk = join(work.path, 'from-image.raw');
    const i = await ok(['install', '--image', pushed.r1!.reference, '--insecure', '--disk', disk, '--timeout', '5']);
    expect(i.stderr).not.toMatch(/unsigned|systemd-boot-efi/);
    const img = await oracles(disk, 'from-image');
    for (const path of ['EFI/BOOT/BOOTX64.EFI', 'EFI/systemd/systemd-bootx64.efi', 'EFI/Linux/ossify-1-a.efi']) {
      const out = join(work.path, `from-image-${path.replace(/\//g, '_')}`);
      mcopy(img, path, out);
      const v = sbverify(out, db1);
      expect(v.ok, `${path}: ${v.out}`).toBe(true);
      expect(sbverify(out, join(work.path, 'k2', 'db.crt')).ok).toBe(false);
    }
    expect(fileSha(join(work.path, 'from-image-EFI_BOOT_BOOTX64.EFI'))).toBe(sha(r1.boot));
    for (const k of ['PK', 'KEK', 'db'] as const) {
      expect(sha(mcopy(img, `loader/keys/auto/${k}.auth`, join(work.path, `from-image-${k}.auth`)))).toBe(sha(r1.auth![k]));
    }
    expect(mcopy(img, 'loader/loader.conf', join(work.path, 'from-image-loader.conf')).toString()).toBe(loaderConf({ timeout: 5, secureBootEnroll: 'force' }));

    // The same release from its build output: the same ESP, file for file.
    const fromDir = join(work.path, 'from-dir.raw');
    await ok(['install', '--from', r1.dir, '--disk', fromDir, '--timeout', '5']);
    expect(await espFiles(disk)).toEqual(await espFiles(fromDir));
  });

  it('upgrade --image replaces systemd-boot and the keys with the release’s, keeps the disk’s timeout, and is done when rerun', async () => {
    const disk = join(work.path, 'upgrade.raw');
    await ok(['install', '--image', pushed.r1!.reference, '--insecure', '--disk', disk, '--timeout', '5']);
    const u = await ok(['upgrade', '--image', pushed.r2!.reference, '--insecure', '--disk', disk, '--json']);
    expect(JSON.parse(u.stdout)).toMatchObject({ slot: 'b', entryFile: 'ossify-2-b+3.efi', generation: 2 });
    expect(u.stderr).toMatch(/boot-files: replaced EFI\/BOOT\/BOOTX64\.EFI/);
    const img = await oracles(disk, 'upgrade');
    const boot = join(work.path, 'upgrade-BOOTX64.EFI');
    expect(sha(mcopy(img, 'EFI/BOOT/BOOTX64.EFI', boot))).toBe(sha(r2.boot));
    expect(sbverify(boot, db1).ok).toBe(true);
    expect(sha(mcopy(img, 'EFI/systemd/systemd-bootx64.efi', join(work.path, 'upgrade-sd.efi')))).toBe(sha(r2.boot));
    for (const k of ['PK', 'KEK', 'db'] as const) expect(sha(mcopy(img, `loader/keys/auto/${k}.auth`, join(work.path, `upgrade-${k}.auth`)))).toBe(sha(r2.auth![k]));
    expect(mcopy(img, 'loader/loader.conf', join(work.path, 'upgrade-loader.conf')).toString()).toBe(loaderConf({ timeout: 5, secureBootEnroll: 'force' }));
    const s = await diskStatus(disk, { verify: true });
    expect(s.bootOrder).toEqual(['ossify-2-b+3.efi', 'ossify-1-a.efi']);
    expect(s.warnings).toEqual([]);
    const before = fileSha(disk);
    expect(JSON.parse((await ok(['upgrade', '--image', pushed.r2!.reference, '--insecure', '--disk', disk, '--json'])).stdout)).toMatchObject({ alreadyInstalled: true });
    expect(fileSha(disk)).toBe(before);
  });

  it('an image made before the payload carried its boot loader: install warns; upgrading to one that does makes the disk enrol and boot under Secure Boot', async () => {
    const disk = join(work.path, 'old-image.raw');
    const i = await ok(['install', '--image', pushed.rOld!.reference, '--insecure', '--disk', disk, '--systemd-boot', SD_BOOT]);
    expect(i.stderr).toMatch(/UKIs are signed for Secure Boot \(by CN=ossify sb test db\), but the disk gets an unsigned systemd-boot and no keys to enrol: a firmware that enforces Secure Boot refuses to start it \(the release carries no boot loader/);
    let img = await oracles(disk, 'old-image');
    mcopy(img, 'EFI/BOOT/BOOTX64.EFI', join(work.path, 'old-boot.efi'));
    expect(sbverify(join(work.path, 'old-boot.efi'), db1).ok).toBe(false);
    expect(Object.keys(await espFiles(disk)).filter((p) => p.startsWith('loader/keys'))).toEqual([]);
    // Slot a's UKI is signed by the db key r2 enrols, so enrolling cannot lock it out.
    const u = await ok(['upgrade', '--image', pushed.r2!.reference, '--insecure', '--disk', disk]);
    expect(u.stderr).toMatch(/boot-files: wrote loader\/keys\/auto\/db\.auth/);
    img = await oracles(disk, 'old-image-upgraded');
    expect(sbverify(mcopyTo(img, 'EFI/BOOT/BOOTX64.EFI', 'old-upgraded.efi'), db1).ok).toBe(true);
    expect(mcopy(img, 'loader/loader.conf', join(work.path, 'old-upgraded.conf')).toString()).toContain('secure-boot-enroll force\n');
    // An old image as the upgrade (over slot b's trial, so into slot a): the disk's boot files stay.
    const before = await espFiles(disk);
    const o = await ok(['upgrade', '--image', pushed.rOld2!.reference, '--insecure', '--disk', disk, '--force']);
    expect(o.stderr).toMatch(/carries no boot loader .*: the disk's systemd-boot and loader.conf stay as they are/);
    const after = await espFiles(disk);
    for (const p of ['EFI/BOOT/BOOTX64.EFI', 'loader/loader.conf', 'loader/keys/auto/db.auth']) expect(after[p], p).toBe(before[p]);
  });

  it('refuses, before writing anything, a boot loader or keys a firmware enforcing Secure Boot could not follow', async () => {
    const signed = join(work.path, 'refuse-signed.raw');
    await ok(['install', '--from', r1.dir, '--disk', signed]);
    const before = fileSha(signed);
    const other = await cli(['upgrade', '--from', rOther.dir, '--disk', signed]);
    expect(other.exitCode, other.stderr).toBe(2);
    expect(other.stderr).toMatch(/this disk's boot loader is signed for Secure Boot by CN=ossify sb test db, but sb-os 2\.0\.0's is signed by CN=ossify other db: a firmware that enforces Secure Boot with this disk's keys would refuse to start it/);
    const unsigned = await cli(['upgrade', '--from', rUnsigned2.dir, '--disk', signed]);
    expect(unsigned.exitCode, unsigned.stderr).toBe(2);
    expect(unsigned.stderr).toMatch(/but sb-os 2\.0\.0's is not signed/);
    expect(fileSha(signed)).toBe(before);

    const plain = join(work.path, 'refuse-plain.raw');
    await ok(['install', '--from', rUnsigned1.dir, '--disk', plain]);
    const plainBefore = fileSha(plain);
    const lock = await cli(['upgrade', '--from', r2.dir, '--disk', plain]);
    expect(lock.exitCode, lock.stderr).toBe(2);
    expect(lock.stderr).toMatch(/sb-os 2\.0\.0 has systemd-boot enrol Secure Boot keys \(loader\/keys\/auto\), but ossify-1-a\.efi, the entry that boots now, is not signed, not by the db key it enrols/);
    expect(fileSha(plain)).toBe(plainBefore);
    // Unsigned to unsigned is an ordinary boot loader update.
    const up = await ok(['upgrade', '--from', rUnsigned2.dir, '--disk', plain]);
    expect(up.stderr).toMatch(/replaced EFI\/BOOT\/BOOTX64\.EFI/);
    expect((await espFiles(plain))['EFI/BOOT/BOOTX64.EFI']).toBe(sha(rUnsigned2.boot));
    await oracles(plain, 'refuse-plain');

    // Same key, no enrolment any more (enroll: off): offline, the signer is checked, so it goes in and the keys go away.
    await ok(['upgrade', '--from', rOff.dir, '--disk', signed]);
    const files = await espFiles(signed);
    expect(files['EFI/BOOT/BOOTX64.EFI']).toBe(sha(rOff.boot));
    expect(Object.keys(files).filter((p) => p.startsWith('loader/keys'))).toEqual([]);
    const img = await oracles(signed, 'refuse-signed');
    expect(mcopy(img, 'loader/loader.conf', join(work.path, 'off.conf')).toString()).toBe(loaderConf({ timeout: 0 }));
  });
});

function mcopyTo(img: string, path: string, name: string): string {
  const out = join(work.path, name);
  mcopy(img, path, out);
  return out;
}

describe('crash safety of the boot files', () => {
  // Inside and around the two boot loader copies (each: clusters, FAT copies and FSInfo, directory sector, old
  // chain freed), then inside the three keys' (loader.conf stays: same timeout, same secure-boot-enroll).
  const sd = readFileSync(SD_BOOT).length + 8192;
  const POINTS = ['boot-files', 'boot-files:1', `boot-files:${sd}`, `boot-files:${sd + 1024}`, `boot-files:${sd + 2048}`, `boot-files:${2 * sd}`, `boot-files:${2 * sd + 3000}`, `boot-files:${2 * sd + 6000}`, `boot-files:${2 * sd + 10000}`, `boot-files:${2 * sd + 14000}`, `boot-files:${2 * sd + 18000}`, 'stage-entry', 'switch'];
  let base: string;
  /** What each kill left: which of BOOTX64.EFI, systemd-bootx64.efi and the three keys were new. */
  const seen = new Map<string, string>();
  beforeAll(async () => {
    base = join(work.path, 'crash-base.raw');
    await ok(['install', '--from', r1.dir, '--disk', base, '--timeout', '5']);
  });

  it.each(POINTS)('killed at %s: systemd-boot and each key file are old or new and signed, slot a boots next, a rerun completes', async (point) => {
    const disk = join(work.path, `crash-${point.replace(':', '-')}.raw`);
    copyFileSync(base, disk);
    const r = await cli(['upgrade', '--from', r2.dir, '--disk', disk], { [CRASH_ENV]: point });
    expect(r.signal, r.stderr).toBe('SIGKILL');
    const s = await diskStatus(disk);
    expect(s.next).toBe('a');
    expect(s.slots[0]!.entry).toMatchObject({ file: 'ossify-1-a.efi', state: 'good' });
    const img = await espImage(disk, `crash-${point.replace(':', '-')}`);
    const boot = mcopyTo(img, 'EFI/BOOT/BOOTX64.EFI', `crash-${point.replace(':', '-')}.efi`);
    expect([sha(r1.boot), sha(r2.boot)]).toContain(fileSha(boot));
    expect(sbverify(boot, db1).ok).toBe(true);
    const files = await espFiles(disk);
    expect([sha(r1.boot), sha(r2.boot)]).toContain(files['EFI/systemd/systemd-bootx64.efi']);
    for (const k of ['PK', 'KEK', 'db'] as const) expect([sha(r1.auth![k]), sha(r2.auth![k])]).toContain(files[`loader/keys/auto/${k}.auth`]);
    const isNew = (p: string, b: Uint8Array) => (files[p] === sha(b) ? 'new' : 'old');
    seen.set(point, [isNew('EFI/BOOT/BOOTX64.EFI', r2.boot), isNew('EFI/systemd/systemd-bootx64.efi', r2.boot), ...(['PK', 'KEK', 'db'] as const).map((k) => isNew(`loader/keys/auto/${k}.auth`, r2.auth![k]))].join(' '));
    expect(files['loader/loader.conf']).toBe(sha(Buffer.from(loaderConf({ timeout: 5, secureBootEnroll: 'force' }))));
    // Between steps the ESP is clean; inside a FAT change at most leaked clusters, an unfinished FAT copy or a
    // stale FSInfo free count (a hint nothing boots by) are left, and the rerun's clean-esp repairs them.
    const problems = await espProblems(disk);
    for (const p of problems) expect(['lost-clusters', 'fat-copies-differ', 'free-count']).toContain(p.kind);
    if (!point.includes(':')) expect(problems).toEqual([]);

    const again = await ok(['upgrade', '--from', r2.dir, '--disk', disk, '--json']);
    expect(JSON.parse(again.stdout)).toMatchObject({ slot: 'b', entryFile: 'ossify-2-b+3.efi', alreadyInstalled: false });
    const done = await espFiles(disk);
    expect(done['EFI/BOOT/BOOTX64.EFI']).toBe(sha(r2.boot));
    expect(done['EFI/systemd/systemd-bootx64.efi']).toBe(sha(r2.boot));
    for (const k of ['PK', 'KEK', 'db'] as const) expect(done[`loader/keys/auto/${k}.auth`]).toBe(sha(r2.auth![k]));
    expect(await espProblems(disk)).toEqual([]);
    await oracles(disk, `crash-${point.replace(':', '-')}-done`);
  });

  it('the kill points reach the mixed states: only BOOTX64.EFI new, both boot loaders new with old keys, some keys new', () => {
    const states = new Set(seen.values());
    expect(states).toContain('old old old old old');
    expect(states).toContain('new old old old old');
    expect(states).toContain('new new old old old');
    expect([...states].some((x) => /^new new (?=.*new)(?=.*old)/.test(x))).toBe(true);
    expect(states).toContain('new new new new new');
  });
});

/** A running system as the on-device script sees it; its ESP is a directory holding `esp`. */
function device(esp: Record<string, Uint8Array | string>, payload: Made) {
  needTool('busybox', 'busybox');
  const root = join(work.path, `device-${Math.random().toString(36).slice(2)}`);
  for (const d of ['proc', 'dev', 'sys/class/block/vda1', 'sys/class/block/vda2', 'sys/class/block/vda3', 'esp', 'payload/ossify/payload']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'proc/cmdline'), 'ossify.slot=a ossify.root=ROOT-A console=ttyS0\n');
  writeFileSync(join(root, 'proc/mounts'), '');
  ['ESP', 'ROOT-A', 'ROOT-B'].forEach((label, i) => {
    writeFileSync(join(root, `sys/class/block/vda${i + 1}/uevent`), `DEVNAME=vda${i + 1}\nPARTNAME=${label}\n`);
    writeFileSync(join(root, `sys/class/block/vda${i + 1}/size`), `${(2 * MiB) / 512}\n`);
    writeFileSync(join(root, `dev/vda${i + 1}`), Buffer.alloc(2 * MiB));
  });
  for (const [p, content] of Object.entries(esp)) {
    mkdirSync(join(root, 'esp', p, '..'), { recursive: true });
    writeFileSync(join(root, 'esp', p), content);
  }
  writeFileSync(join(root, 'payload/ossify/install.sh'), DEVICE_SCRIPT);
  const build = JSON.parse(readFileSync(join(payload.dir, 'build.json'), 'utf8')) as { artifacts: Record<string, unknown> };
  for (const n of Object.keys(build.artifacts)) copyFileSync(join(payload.dir, n), join(root, 'payload/ossify/payload', n));
  const env = { OSSIFY_ROOT: join(root, 'payload'), OSSIFY_BUSYBOX: '/usr/bin/busybox', OSSIFY_PROC: join(root, 'proc'), OSSIFY_SYS: join(root, 'sys'), OSSIFY_DEV: join(root, 'dev'), OSSIFY_ESP_DIR: join(root, 'esp'), OSSIFY_MACHINE: 'x86_64' };
  return {
    esp: join(root, 'esp'),
    async upgrade() {
      // release.json as `ossify pull` writes it.
      writeFileSync(join(root, 'payload/ossify/payload/release.json'), (await openReleaseDir(payload.dir)).releaseJson);
      return run('busybox', ['sh', join(root, 'payload/ossify/install.sh'), 'upgrade'], { env });
    },
    files(): Record<string, string> {
      const out: Record<string, string> = {};
      const walk = (d: string, rel: string) => {
        for (const e of readdirSync(d, { withFileTypes: true })) {
          if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
          else out[`${rel}${e.name}`] = sha(readFileSync(join(d, e.name)));
        }
      };
      walk(join(root, 'esp'), '');
      return out;
    },
  };
}

/** The ESP a signed r1 install has, as files (with the timeout set at install). */
function signedEsp(): Record<string, Uint8Array | string> {
  return {
    'EFI/BOOT/BOOTX64.EFI': r1.boot,
    'EFI/systemd/systemd-bootx64.efi': r1.boot,
    'EFI/Linux/ossify-4-a.efi': r1.uki.a,
    'loader/loader.conf': loaderConf({ timeout: 5, secureBootEnroll: 'force' }),
    'loader/keys/auto/PK.auth': r1.auth!.PK,
    'loader/keys/auto/KEK.auth': r1.auth!.KEK,
    'loader/keys/auto/db.auth': r1.auth!.db,
  };
}

describe('the on-device script', () => {
  it('puts the release’s systemd-boot, keys and loader.conf (with the disk’s timeout) on the ESP, as the offline upgrade does', async () => {
    const dev = device(signedEsp(), r2);
    const r = await dev.upgrade();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/boot files: EFI\/BOOT\/BOOTX64\.EFI/);
    const f = dev.files();
    expect(f['EFI/BOOT/BOOTX64.EFI']).toBe(sha(r2.boot));
    expect(f['EFI/systemd/systemd-bootx64.efi']).toBe(sha(r2.boot));
    for (const k of ['PK', 'KEK', 'db'] as const) expect(f[`loader/keys/auto/${k}.auth`]).toBe(sha(r2.auth![k]));
    const conf = readFileSync(join(dev.esp, 'loader/loader.conf'), 'utf8');
    expect(conf).toBe(mergedLoaderConf(r2.loaderConf, loaderConf({ timeout: 5, secureBootEnroll: 'force' })));
    expect(conf).toBe(loaderConf({ timeout: 5, secureBootEnroll: 'force' }));
    expect(f['EFI/Linux/ossify-5-b+3.efi']).toBe(sha(r2.uki.b));
    expect(Object.keys(f).filter((p) => p.endsWith('.ossify-tmp'))).toEqual([]);
    expect(sbverify(join(dev.esp, 'EFI/BOOT/BOOTX64.EFI'), db1).ok).toBe(true);
  });

  it('refuses another key, an unsigned boot loader, and keys that would lock out the running slot, with the ESP untouched', async () => {
    for (const [payload, esp, msg] of [
      [rOther, signedEsp(), /this disk's boot loader is signed by another key than the db key of sb-os 2\.0\.0/],
      [rUnsigned2, signedEsp(), /this disk's boot loader is signed for Secure Boot, but sb-os 2\.0\.0's is not/],
      [r2, { ...signedEsp(), 'EFI/BOOT/BOOTX64.EFI': readFileSync(SD_BOOT), 'EFI/Linux/ossify-4-a.efi': rUnsigned1.uki.a }, /the running slot a's entry is not signed by the db key it enrols/],
    ] as const) {
      const dev = device(esp, payload);
      const before = dev.files();
      const r = await dev.upgrade();
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(msg);
      expect(dev.files()).toEqual(before);
    }
  });

  it('enrols on a disk whose running UKI the keys sign; keeps a signed boot loader it cannot check; leaves the boot files of an old payload alone', async () => {
    // As an image made before the payload carried the boot loader installs it: Debian's unsigned systemd-boot, no keys, a signed UKI.
    const fix = device({ 'EFI/BOOT/BOOTX64.EFI': readFileSync(SD_BOOT), 'EFI/systemd/systemd-bootx64.efi': readFileSync(SD_BOOT), 'EFI/Linux/ossify-4-a.efi': r1.uki.a, 'loader/loader.conf': loaderConf({ timeout: 0 }) }, r2);
    const r = await fix.upgrade();
    expect(r.code, r.stderr).toBe(0);
    expect(fix.files()['EFI/BOOT/BOOTX64.EFI']).toBe(sha(r2.boot));
    expect(readFileSync(join(fix.esp, 'loader/loader.conf'), 'utf8')).toBe(r2.loaderConf);
    for (const k of ['PK', 'KEK', 'db'] as const) expect(fix.files()[`loader/keys/auto/${k}.auth`]).toBe(sha(r2.auth![k]));

    const off = device(signedEsp(), rOff);
    const o = await off.upgrade();
    expect(o.code, o.stderr).toBe(0);
    expect(o.stderr).toMatch(/keeping this disk's signed boot loader/);
    expect(off.files()['EFI/BOOT/BOOTX64.EFI']).toBe(sha(r1.boot));

    const old = device(signedEsp(), rOld);
    const before = old.files();
    const l = await old.upgrade();
    expect(l.code, l.stderr).toBe(0);
    expect(l.stderr).toMatch(/carries no boot loader/);
    const after = old.files();
    for (const p of Object.keys(before)) expect(after[p], p).toBe(before[p]);
  });
});
