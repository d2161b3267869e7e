import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { DEFAULT_ARCH, qemuFor } from '../arch.ts';
import { diskArch } from '../installer/layout.ts';
import { InputError, MissingToolError } from '../util/errors.ts';
import { findFirmware } from './ovmf.ts';
import { detectDiskFormat } from './disk-format.ts';

export interface RunOptions {
  /** The boot disk; only a run with `cdrom` may have none (the CD then boots alone). */
  disk?: string;
  /** The guest's architecture (uname -m); default: an ossify disk's (its root partition type), else DEFAULT_ARCH. */
  arch?: string;
  /** Further raw disks attached after the boot disk (e.g. an installer payload). */
  extraDisks?: string[];
  /**
   * An ISO attached as a CD-ROM. The disk still boots first: a blank disk has nothing to
   * boot, so the firmware starts the CD (an installer); once installed, the reset boots the disk.
   */
  cdrom?: string;
  expect?: RegExp;
  /** Kill the VM as soon as `expect` matches (e.g. a firmware error that would otherwise stall until the timeout). */
  stopOnMatch?: boolean;
  /** Seconds before the VM is killed. */
  timeout: number;
  kvm?: boolean;
  memoryMiB?: number;
  /** Do not write to the disk (qemu -snapshot); boot counting then cannot persist. */
  snapshot?: boolean;
  /** Exit QEMU when the guest reboots instead of booting again. */
  noReboot?: boolean;
  secureBoot?: boolean;
  /** Firmware variables to boot with (e.g. with enrolled keys); a private copy is used. */
  varsFile?: string;
  /**
   * A virtio network card on QEMU's user-mode network (DHCP at 10.0.2.15, no root needed):
   * `user` reaches what the host reaches, `isolated` reaches nothing beyond QEMU (restrict=on).
   * Without it the guest has no network card.
   */
  net?: 'user' | 'isolated';
  /** Receives the serial console as it arrives. */
  onOutput?: (chunk: string) => void;
}

export interface RunResult {
  /** Everything the serial console printed. */
  log: string;
  matched: boolean;
  match?: string;
  timedOut: boolean;
  exitCode: number | undefined;
  seconds: number;
}

/**
 * A `-drive` for a disk image in any format QEMU reads (detected from its bytes). QEMU cannot
 * write a stream-optimized VMDK in place, so one boots on a temporary overlay.
 */
async function driveFor(disk: string, boot: boolean): Promise<string> {
  const format = await detectDiskFormat(disk, { refuseArchives: boot });
  return `format=${format},file=${disk.replace(/,/g, ',,')}${format === 'vmdk' ? ',snapshot=on' : ''}`;
}

/**
 * Boots a disk image (raw, qcow2, VHD, VMDK) under UEFI (OVMF, AAVMF: builder/arch.ts) with the
 * serial console on a pipe. TCG by default: on these machines /dev/kvm exists but OVMF crashes under it.
 */
export async function runDisk(opts: RunOptions): Promise<RunResult> {
  if (!opts.disk && !opts.cdrom) throw new InputError('nothing to boot: no disk and no CD-ROM');
  const boot = opts.disk ? await driveFor(opts.disk, true) : undefined;
  const extra = await Promise.all((opts.extraDisks ?? []).map((d) => driveFor(d, false)));
  // The root partition type names the arch of a raw disk; other formats (and a CD alone) boot as the default unless --arch says.
  const arch = opts.arch ?? (opts.disk && boot?.startsWith('format=raw,') ? await diskArch(opts.disk) : undefined) ?? DEFAULT_ARCH;
  const q = qemuFor(arch);
  const fw = await findFirmware(arch, opts.secureBoot ? 'secure-boot' : 'plain');
  const work = await mkdtemp(join(tmpdir(), 'ossify-run-'));
  const vars = join(work, 'VARS.fd');
  await copyFile(opts.varsFile ?? fw.vars, vars);
  const args = [
    '-machine', opts.secureBoot ? (q.secureBootMachine ?? q.machine) : q.machine,
    ...(q.cpu ? ['-cpu', q.cpu] : []),
    '-accel', opts.kvm ? 'kvm' : 'tcg',
    '-m', String(opts.memoryMiB ?? 512),
    '-smp', '1',
    '-nodefaults',
    '-display', 'none',
    '-no-user-config',
    '-chardev', 'stdio,id=console,signal=off',
    '-serial', 'chardev:console',
    '-monitor', 'none',
    ...(opts.secureBoot ? ['-global', 'driver=cfi.pflash01,property=secure,value=on'] : []),
    '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${fw.code}`,
    '-drive', `if=pflash,format=raw,unit=1,file=${vars}`,
    ...(opts.cdrom
      ? [
          // The disk boots first: a blank one has nothing to boot, so the CD (an installer) starts; after the install the reset boots the disk.
          ...(boot ? ['-drive', `if=none,id=disk0,${boot}`, '-device', 'virtio-blk-pci,drive=disk0,bootindex=0'] : []),
          '-drive', `if=none,id=cd0,media=cdrom,format=raw,readonly=on,file=${opts.cdrom.replace(/,/g, ',,')}`,
          '-device', 'ide-cd,drive=cd0,bootindex=1',
        ]
      : boot
        ? ['-drive', `if=virtio,${boot}`]
        : []),
    ...extra.flatMap((d) => ['-drive', `if=virtio,${d}`]),
    ...(opts.net ? ['-nic', `user,model=virtio-net-pci${opts.net === 'isolated' ? ',restrict=on' : ''}`] : []),
    ...(opts.snapshot ? ['-snapshot'] : []),
    ...(opts.noReboot ? ['-no-reboot'] : []),
  ];
  const started = performance.now();
  let log = '';
  let match: string | undefined;
  const child = execa(q.binary, args, {
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    reject: false,
    timeout: opts.timeout * 1000,
    killSignal: 'SIGKILL',
    encoding: 'utf8',
    buffer: { stdout: false, stderr: true },
  });
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    log += chunk;
    opts.onOutput?.(chunk);
    if (opts.expect && match === undefined) {
      const m = opts.expect.exec(log);
      if (m) {
        match = m[0];
        if (opts.stopOnMatch) child.kill('SIGKILL');
      }
    }
  });
  try {
    const r = await child;
    if ((r as { code?: string }).code === 'ENOENT') {
      throw new MissingToolError(q.binary, q.package, `needed to boot ${arch} images`);
    }
    const result: RunResult = {
      log,
      matched: match !== undefined,
      timedOut: r.timedOut,
      exitCode: r.exitCode,
      seconds: (performance.now() - started) / 1000,
    };
    if (match !== undefined) result.match = match;
    if (!r.timedOut && r.exitCode !== 0 && r.stderr && !(opts.stopOnMatch && match !== undefined)) result.log += `\n[qemu] ${r.stderr}`;
    return result;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
