import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { accessSync, chmodSync, constants, copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { buildUki } from '../../builder/boot/uki.ts';
import { generateSecureBootKeys, loadSigner, secureBootAuthFiles, signPeImage } from '../../builder/boot/secureboot/index.ts';
import { computeVerity, verityTable, writeVerityTree } from '../../builder/formats/verity.ts';
import { derivedGuid } from '../../builder/util/guid.ts';
import { fileHandleSink } from '../../builder/util/sink.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

/**
 * The UKI actually boots: OVMF → EFI/BOOT/BOOTX64.EFI (our UKI) → systemd-stub → the Debian
 * cloud kernel with our initrd and command line → /init prints markers and powers off. The
 * same chain then runs under enforced Secure Boot with our enrolled keys, and with an
 * initramfs that opens our dm-verity trees in the real kernel.
 */

const STUB_PATH = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const SD_BOOT_PATH = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
const KERNEL_PACKAGE = 'linux-image-6.1.0-56-cloud-amd64';
const CACHE = fileURLToPath(new URL('../../out/test-cache/uki-kernel/', import.meta.url));
const work = mkdtempSync(join(tmpdir(), 'ossify-uki-boot-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function readable(path: string): boolean {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

function vmlinuzIn(bootDir: string): { path: string; release: string } | undefined {
  let names: string[] = [];
  try {
    names = readdirSync(bootDir);
  } catch {
    return undefined;
  }
  const name = names.filter((n) => n.startsWith('vmlinuz-') && readable(join(bootDir, n))).sort().at(-1);
  return name ? { path: join(bootDir, name), release: name.slice('vmlinuz-'.length) } : undefined;
}

/** Module directories of the kernel package the verity test loads from (virtio disks, dm-verity). */
const MODULE_DIRS = ['kernel/drivers/md', 'kernel/drivers/virtio', 'kernel/drivers/block', 'kernel/lib/reed_solomon'];

/**
 * Debian's cloud kernel, pinned, cached under out/test-cache: ./boot and the few module
 * directories the tests load from. A marker file makes a half-extracted cache re-extract.
 */
function debianKernel(): { path: string; release: string; modules: string } {
  const marker = join(CACHE, '.complete');
  const done = () => {
    const k = vmlinuzIn(join(CACHE, 'boot'));
    return k && readable(marker) ? { ...k, modules: join(CACHE, 'lib/modules', k.release) } : undefined;
  };
  const cached = done();
  if (cached) return cached;
  requireTool('apt-get', 'apt');
  requireTool('dpkg-deb', 'dpkg');
  rmSync(CACHE, { recursive: true, force: true });
  mkdirSync(CACHE, { recursive: true });
  const dl = spawnSync('apt-get', ['download', KERNEL_PACKAGE], { cwd: CACHE, encoding: 'utf8' });
  if (dl.status !== 0) throw new Error(`apt-get download ${KERNEL_PACKAGE} failed (run apt-get update first?):\n${dl.stderr}`);
  const deb = readdirSync(CACHE).find((n) => n.startsWith(`${KERNEL_PACKAGE}_`) && n.endsWith('.deb'));
  if (!deb) throw new Error(`apt-get download left no ${KERNEL_PACKAGE} .deb in ${CACHE}`);
  const patterns = ['./boot/', ...MODULE_DIRS.map((d) => `./lib/modules/*/${d}/*`)];
  runOk('sh', ['-c', 'deb="$1"; dir="$2"; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -xf - -C "$dir" --wildcards "$@"', 'sh', join(CACHE, deb), CACHE, ...patterns]);
  rmSync(join(CACHE, deb));
  writeFileSync(marker, '');
  const got = done();
  if (!got) throw new Error(`${KERNEL_PACKAGE} has no boot/vmlinuz-*`);
  return got;
}

/** The host's kernel if it has a readable one, else Debian's cloud kernel. */
function kernel(): { path: string; release: string } {
  return vmlinuzIn('/boot') ?? debianKernel();
}

/** `names` and everything they depend on (modinfo's depends=), dependencies first. */
function moduleClosure(modulesDir: string, names: string[]): string[] {
  requireTool('modinfo', 'kmod');
  const files = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith('.ko')) files.set(e.name.slice(0, -3).replace(/-/g, '_'), join(d, e.name));
    }
  };
  walk(modulesDir);
  const order: string[] = [];
  const visit = (name: string) => {
    const file = files.get(name.replace(/-/g, '_'));
    if (!file) throw new Error(`module ${name} is not among the extracted ${MODULE_DIRS.join(', ')}`);
    if (order.includes(file)) return;
    const deps = runOk('modinfo', ['-F', 'depends', file]).trim();
    for (const d of deps ? deps.split(',') : []) visit(d);
    order.push(file);
  };
  names.forEach(visit);
  return order;
}

/** A host program and the shared libraries ldd says it loads, as initrd paths → host paths. */
function withLibraries(program: string): Map<string, string> {
  requireTool('ldd', 'libc-bin');
  const out = new Map<string, string>([[program, program]]);
  for (const line of runOk('ldd', [program]).split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) out.set(m[1]!, m[1]!);
  }
  return out;
}

function staticBusybox(): string {
  requireTool('busybox', 'busybox-static');
  const path = runOk('sh', ['-c', 'command -v busybox']).trim();
  const head = readFileSync(path).subarray(0, 4096).toString('latin1');
  if (head.includes('/lib64/ld-linux') || head.includes('/lib/ld-linux')) {
    throw new Error(`${path} is dynamically linked; the initrd needs a static one: apt-get install busybox-static`);
  }
  return path;
}

/**
 * A newc cpio with a static busybox, an /init script and any extra files (initrd path → host
 * path); made with the cpio tool.
 */
function initrd(initScript: string, extra: Map<string, string> = new Map()): Uint8Array {
  requireTool('cpio', 'cpio');
  const stage = join(work, 'initrd');
  rmSync(stage, { recursive: true, force: true });
  for (const d of ['bin', 'dev', 'proc', 'sys', 'run']) mkdirSync(join(stage, d), { recursive: true });
  copyFileSync(staticBusybox(), join(stage, 'bin/busybox'));
  chmodSync(join(stage, 'bin/busybox'), 0o755);
  writeFileSync(join(stage, 'init'), initScript, { mode: 0o755 });
  for (const [to, from] of extra) {
    mkdirSync(dirname(join(stage, to)), { recursive: true });
    copyFileSync(from, join(stage, to));
  }
  const out = join(work, 'initrd.cpio');
  runOk('sh', ['-c', 'cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet > "$2"', 'sh', stage, out]);
  return readFileSync(out);
}

/** A whole-disk FAT ("superfloppy") holding EFI/BOOT/BOOTX64.EFI: OVMF boots it as removable media. */
function espImage(files: Record<string, Uint8Array>, name = 'esp.img'): string {
  requireTool('mkfs.vfat', 'dosfstools');
  requireTool('mcopy', 'mtools');
  requireTool('mmd', 'mtools');
  const img = join(work, name);
  rmSync(img, { force: true });
  const size = Object.values(files).reduce((n, f) => n + f.length, 0);
  runOk('mkfs.vfat', ['-C', '-F', '32', '-i', '05551212', img, String(Math.max(40 * 1024, Math.ceil((size * 1.2) / 1024) + 8192))]);
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  const dirs = new Set<string>();
  for (const p of Object.keys(files)) {
    const parts = p.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  for (const d of [...dirs].sort()) runOk('mmd', ['-i', img, `::/${d}`], { env });
  for (const [p, data] of Object.entries(files)) {
    const src = join(work, 'staged.bin');
    writeFileSync(src, data);
    runOk('mcopy', ['-i', img, src, `::/${p}`], { env });
  }
  return img;
}

const INIT = `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo "OSSIFY-UKI-OK release=$(/bin/busybox uname -r)"
/bin/busybox echo "CMDLINE:$(/bin/busybox cat /proc/cmdline)"
/bin/busybox poweroff -f
`;

describe('UKI boot under OVMF', () => {
  it('systemd-stub starts the embedded kernel with the embedded initrd and command line', async () => {
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    const k = kernel();
    const uki = buildUki({
      stub: readFileSync(STUB_PATH),
      kernel: readFileSync(k.path),
      initrd: initrd(INIT),
      cmdline: 'console=ttyS0 panic=-1 ossify.test=uki-cmdline-7f3a',
      osRelease: 'ID=ossify\nVERSION_ID=test\nPRETTY_NAME="ossify test"\n',
      uname: k.release,
    });
    const disk = espImage({ 'EFI/BOOT/BOOTX64.EFI': uki });
    const r = await runDisk({ disk, expect: /CMDLINE:[^\n]*ossify\.test=uki-cmdline-7f3a/, timeout: 240, noReboot: true, snapshot: true });
    expect(r.log, r.log.slice(-3000)).toContain(`OSSIFY-UKI-OK release=${k.release}`);
    expect(r.matched, r.log.slice(-3000)).toBe(true);
    expect(r.timedOut).toBe(false);
  }, 300_000);

  it('under enforced Secure Boot: systemd-boot enrolls our .auth keys, then boots only what we signed', async () => {
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    requireTool('openssl', 'openssl');
    const k = kernel();
    const keys = await generateSecureBootKeys(join(work, 'keys'), { commonName: 'ossify boot test' });
    const signer = (n: 'PK' | 'KEK' | 'db') => loadSigner(readFileSync(keys[n].key, 'utf8'), readFileSync(keys[n].cert));
    const auth = secureBootAuthFiles({
      PK: signer('PK'),
      KEK: signer('KEK'),
      db: [readFileSync(keys.db.certDer)],
      owner: derivedGuid('uki-boot-test', 'secure-boot-owner'),
      timestamp: 1_700_000_000,
    });
    const uki = buildUki({
      stub: readFileSync(STUB_PATH),
      kernel: readFileSync(k.path),
      initrd: initrd(INIT),
      cmdline: 'console=ttyS0 panic=-1 ossify.test=sb-cmdline-51c2',
      osRelease: 'ID=ossify\nVERSION_ID=test\nPRETTY_NAME="ossify test"\n',
      uname: k.release,
    });
    let sdBoot: Buffer;
    try {
      sdBoot = readFileSync(SD_BOOT_PATH);
    } catch {
      throw new Error(`${SD_BOOT_PATH} is missing: apt-get install systemd-boot-efi`);
    }
    // First boot: setup mode, so the unsigned-looking chain runs and systemd-boot enrolls db,
    // KEK, PK and resets. Second boot: Secure Boot enforced; the firmware checks both
    // signatures against our db before anything runs.
    const disk = espImage(
      {
        'EFI/BOOT/BOOTX64.EFI': signPeImage(sdBoot, signer('db')),
        'EFI/Linux/ossify.efi': signPeImage(uki, signer('db')),
        'loader/loader.conf': new TextEncoder().encode('timeout 0\nsecure-boot-enroll force\n'),
        'loader/keys/auto/PK.auth': auth.PK,
        'loader/keys/auto/KEK.auth': auth.KEK,
        'loader/keys/auto/db.auth': auth.db,
      },
      'esp-sb.img',
    );
    const r = await runDisk({ disk, secureBoot: true, expect: /CMDLINE:[^\n]*ossify\.test=sb-cmdline-51c2/, timeout: 280, noReboot: false, snapshot: true });
    const tail = r.log.slice(-4000);
    // Our keys were enrolled from loader/keys/auto: systemd-boot says so, and the kernel finds our
    // db certificate in the firmware (the serial log under load sometimes loses the first line).
    expect(r.log, tail).toMatch(/Enrolling secure boot keys from directory: \\loader\\keys\\auto|integrity: Loaded X\.509 cert 'ossify boot test db/);
    expect(r.matched, tail).toBe(true);
    // The kernel's EFI stub and setup code both report the firmware's state; either line will do
    // (the serial log occasionally drops a replayed early-boot line).
    expect(r.log, tail).toMatch(/EFI stub: UEFI Secure Boot is enabled|secureboot: Secure boot enabled/);
    expect(r.log, tail).toContain(`OSSIFY-UKI-OK release=${k.release}`);

    // Control: the same disk with the UKI signed by a key outside db must not boot.
    const rogue = await generateSecureBootKeys(join(work, 'rogue'), { commonName: 'ossify rogue' });
    const rogueDisk = espImage(
      {
        'EFI/BOOT/BOOTX64.EFI': signPeImage(sdBoot, signer('db')),
        'EFI/Linux/ossify.efi': signPeImage(uki, loadSigner(readFileSync(rogue.db.key, 'utf8'), readFileSync(rogue.db.cert))),
        'loader/loader.conf': new TextEncoder().encode('timeout 0\nsecure-boot-enroll force\n'),
        'loader/keys/auto/PK.auth': auth.PK,
        'loader/keys/auto/KEK.auth': auth.KEK,
        'loader/keys/auto/db.auth': auth.db,
      },
      'esp-rogue.img',
    );
    const denied = await runDisk({ disk: rogueDisk, secureBoot: true, expect: /Error loading \\EFI\\Linux\\ossify\.efi: (Access Denied|Security Violation)/, timeout: 50, snapshot: true });
    expect(denied.log).not.toContain('OSSIFY-UKI-OK');
    expect(denied.matched, denied.log.slice(-3000)).toBe(true);
  }, 480_000);

  it('an initramfs opens our dm-verity tree with the dmsetup and veritysetup argv verityTable gives', async () => {
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    requireTool('dmsetup', 'dmsetup');
    requireTool('veritysetup', 'cryptsetup-bin');
    const k = debianKernel();
    const modules = moduleClosure(k.modules, ['virtio_pci', 'virtio_blk', 'dm-verity']);

    // A data partition image: 3 MiB + 1000 bytes of data, zero padding, superblock + tree.
    const raw = Buffer.alloc(3 * 1024 * 1024 + 1000);
    for (let i = 0, ctr = 0; i < raw.length; ctr++) i += createHash('sha256').update(`verity-boot:${ctr}`).digest().copy(raw, i);
    const dataFile = join(work, 'verity-data');
    writeFileSync(dataFile, raw);
    const v = await computeVerity(dataFile);
    const partition = async (name: string, data: Buffer) => {
      const path = join(work, name);
      const fh = await open(path, 'w');
      await fh.write(data, 0, data.length, 0);
      await writeVerityTree(fileHandleSink(fh), v);
      await fh.close();
      return path;
    };
    const good = await partition('good.img', raw);
    const flipped = Buffer.from(raw);
    flipped[2 * 1024 * 1024 + 5]! ^= 0x40;
    const bad = await partition('bad.img', flipped);
    const expectedSha = createHash('sha256').update(raw).update(Buffer.alloc(v.dataBlocks * v.dataBlockSize - raw.length)).digest('hex');

    // Boot disk is vda; the partitions are vdb (intact) and vdc (one flipped bit).
    const q = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;
    const sh = (argv: string[]) => argv.map(q).join(' ');
    const dm = verityTable(v, { dataDevice: '/dev/vdb', name: 'vroot' });
    const vs = verityTable(v, { dataDevice: '/dev/vdb', name: 'vsroot', onCorruption: 'eio' });
    const eio = verityTable(v, { dataDevice: '/dev/vdc', name: 'vbad', onCorruption: 'eio' });
    const restart = verityTable(v, { dataDevice: '/dev/vdc', name: 'vrestart', onCorruption: 'restart' });
    const init = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin:/sbin:/usr/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
${modules.map((m) => `insmod /modules/${m.split('/').pop()} || echo "INSMOD-FAILED ${m.split('/').pop()}"`).join('\n')}
i=0; while [ ! -b /dev/vdc ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
${Object.entries(dm.env).map(([key, val]) => `export ${key}=${q(val)}`).join('\n')}
${sh(vs.veritysetupOpenArgv)} && echo VSOPEN-OK
echo "VS-SHA:$(sha256sum ${vs.devicePath})"
veritysetup close vsroot
${sh(dm.dmsetupArgv)} && echo DMSETUP-OK
echo "DM-SHA:$(sha256sum ${dm.devicePath})"
echo "DM-TABLE:$(dmsetup table vroot)"
${sh(eio.dmsetupArgv)} && echo DMSETUP-BAD-OK
if cat /dev/mapper/vbad > /dev/null; then echo BAD-READ:ok; else echo BAD-READ:failed; fi
${sh(restart.dmsetupArgv)}
echo RESTART-READ-BEGIN
cat /dev/mapper/vrestart > /dev/null
echo STILL-ALIVE
poweroff -f
`;
    const extra = new Map<string, string>();
    for (const m of modules) extra.set(`modules/${m.split('/').pop()}`, m);
    for (const prog of ['dmsetup', 'veritysetup']) {
      const path = runOk('sh', ['-c', 'command -v "$1"', 'sh', prog]).trim();
      for (const [to, from] of withLibraries(path)) extra.set(to.replace(/^\//, ''), from);
    }
    const uki = buildUki({
      stub: readFileSync(STUB_PATH),
      kernel: readFileSync(k.path),
      initrd: initrd(init, extra),
      cmdline: 'console=ttyS0 panic=-1',
      osRelease: 'ID=ossify\nVERSION_ID=test\n',
      uname: k.release,
    });
    const disk = espImage({ 'EFI/BOOT/BOOTX64.EFI': uki }, 'esp-verity.img');
    const r = await runDisk({ disk, extraDisks: [good, bad], expect: /RESTART-READ-BEGIN/, timeout: 240, noReboot: true, snapshot: true });
    const tail = r.log.slice(-5000);
    expect(r.log, tail).not.toMatch(/INSMOD-FAILED/);
    expect(r.log, tail).toContain('DMSETUP-OK');
    expect(r.log, tail).toContain(`DM-SHA:${expectedSha}  /dev/mapper/vroot`);
    // The kernel's own copy of the table: everything but the device names (shown as major:minor).
    const kernelTable = /DM-TABLE:([^\r\n]*)/.exec(r.log)?.[1]?.trim().split(/\s+/) ?? [];
    const ours = dm.table.split(' ');
    expect([...kernelTable.slice(0, 4), ...kernelTable.slice(6)], tail).toEqual([...ours.slice(0, 4), ...ours.slice(6)]);
    expect(r.log, tail).toContain('VSOPEN-OK');
    expect(r.log, tail).toContain(`VS-SHA:${expectedSha}  /dev/mapper/vsroot`);
    expect(r.log, tail).toContain('DMSETUP-BAD-OK');
    expect(r.log, tail).toContain('BAD-READ:failed');
    expect(r.log, tail).toMatch(/device-mapper: verity: [^\n]*data block \d+ is corrupted/);
    // restart_on_corruption: the read never returns, the machine restarts (QEMU exits on it).
    expect(r.log.slice(r.log.indexOf('RESTART-READ-BEGIN')), tail).not.toContain('STILL-ALIVE');
    expect(r.timedOut, tail).toBe(false);
  }, 300_000);
});
