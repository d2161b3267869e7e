import { Option, type Command } from 'commander';
import { access, open } from 'node:fs/promises';
import { archInfo } from '../arch.ts';
import { runDisk, type RunOptions } from '../run/qemu.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { isIso9660 } from '../formats/iso9660.ts';

async function isIsoFile(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    return await isIso9660(async (o, n) => {
      const b = Buffer.alloc(n);
      await fh.read(b, 0, n, o);
      return b;
    });
  } finally {
    await fh.close();
  }
}

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description('boot a disk image in QEMU with UEFI firmware (OVMF, or AAVMF for aarch64 disks), serial console on stdout')
    .argument('<disk>', 'disk image: raw, qcow2, VHD or VMDK (detected from its bytes), or an installer ISO: it boots as a CD-ROM and the first --disk is the disk it installs to')
    .option('--expect <regex>', 'succeed only if the console prints a match')
    .option('--timeout <seconds>', 'kill the VM after this many seconds', '120')
    .option('--arch <arch>', 'the guest architecture (default: the disk\'s, by its root partition type)')
    .option('--kvm', 'use KVM instead of TCG software emulation')
    .option('--memory <MiB>', 'guest memory', '512')
    .option('--snapshot', 'do not write to the disk image')
    .option('--no-reboot', 'exit when the guest reboots')
    .option('--disk <file...>', 'attach further disks (any format run boots; with an ISO: the first is the install target and boots first once installed)')
    .option('--secure-boot', 'boot with the Secure Boot OVMF build (enforced once keys are enrolled; a fresh VM starts in setup mode, where systemd-boot enrols the image\'s loader/keys/auto keys and resets)')
    .option('--vars <file>', 'start from these OVMF variables (e.g. with keys already enrolled) instead of a blank store')
    .addOption(new Option('--net <mode>', 'a virtio network card on QEMU\'s user-mode network (DHCP): user reaches what the host reaches, isolated only QEMU itself (default: no network card)').choices(['user', 'isolated']))
    .option('--json', 'print the result as JSON instead of the console')
    .action(async (disk: string, o: { arch?: string; expect?: string; timeout: string; kvm?: boolean; memory: string; snapshot?: boolean; reboot: boolean; disk?: string[]; json?: boolean; secureBoot?: boolean; vars?: string; net?: 'user' | 'isolated' }) => {
      await access(disk).catch(() => {
        throw new InputError(`disk image ${disk} does not exist`);
      });
      let expect: RegExp | undefined;
      try {
        expect = o.expect === undefined ? undefined : new RegExp(o.expect);
      } catch (err) {
        throw new InputError(`--expect is not a valid regular expression: ${(err as Error).message}`);
      }
      const timeout = Number(o.timeout);
      if (!Number.isFinite(timeout) || timeout <= 0) throw new InputError(`--timeout must be a positive number of seconds, not ${o.timeout}`);
      const iso = await isIsoFile(disk);
      const opts: RunOptions = { timeout, memoryMiB: Number(o.memory), noReboot: !o.reboot };
      if (iso) {
        opts.cdrom = disk;
        const [target, ...rest] = o.disk ?? [];
        if (target) opts.disk = target;
        if (rest.length) opts.extraDisks = rest;
      } else {
        opts.disk = disk;
        if (o.disk) opts.extraDisks = o.disk;
      }
      for (const d of o.disk ?? []) {
        await access(d).catch(() => {
          throw new InputError(`--disk ${d} does not exist`, { hint: iso ? `a blank install target: truncate -s 2G ${d}` : undefined });
        });
      }
      if (expect) opts.expect = expect;
      if (o.arch !== undefined) opts.arch = archInfo(o.arch).uname;
      if (o.kvm) opts.kvm = true;
      if (o.snapshot) opts.snapshot = true;
      if (o.net) opts.net = o.net;
      if (o.secureBoot) opts.secureBoot = true;
      if (o.vars !== undefined) {
        await access(o.vars).catch(() => {
          throw new InputError(`--vars ${o.vars} does not exist`);
        });
        opts.varsFile = o.vars;
      }
      if (!o.json) opts.onOutput = (chunk) => process.stdout.write(chunk);
      const r = await runDisk(opts);
      if (o.json) process.stdout.write(`${JSON.stringify({ matched: r.matched, match: r.match, timedOut: r.timedOut, exitCode: r.exitCode, seconds: r.seconds })}\n`);
      if (expect && !r.matched) {
        throw new OssifyError(`the console never printed a match for /${o.expect}/${r.timedOut ? ` within ${timeout} s` : ''}`);
      }
      if (!expect && r.timedOut) throw new OssifyError(`the VM was still running after ${timeout} s`);
    });
}
