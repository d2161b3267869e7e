import type { Command } from 'commander';
import { join } from 'node:path';
import { install } from '../installer/install.ts';
import { addSourceOptions, intFlag, sizeFlag, sourceFromFlags, stderrLog, type SourceCliFlags } from '../installer/cli-support.ts';

interface InstallFlags extends SourceCliFlags {
  disk: string;
  size?: string;
  espSize?: string;
  rootSize?: string;
  cmdline?: string;
  systemdBoot?: string;
  timeout?: string;
  cacheDir?: string;
  force?: boolean;
  json?: boolean;
}

export function registerInstallCommand(program: Command): void {
  addSourceOptions(
    program
      .command('install')
      .description('lay out a blank disk (image file or block device) with the A/B partitions and install a release into slot A (a site release\'s data into STATE)'),
  )
    .requiredOption('--disk <file>', 'disk image file (created if missing) or block device')
    .option('--size <size>', 'size of a new disk image file, e.g. 2G (default: the release build\'s disk size)')
    .option('--esp-size <size>', 'ESP size (default: the release build\'s)')
    .option('--root-size <size>', 'size of each root slot (default: the release build\'s)')
    .option('--cmdline <args>', 'kernel arguments besides the slot\'s own (default: the release\'s, its profile\'s kernel.cmdline; required for a Type #1 release made by an older ossify, which records none)')
    .option('--systemd-boot <file>', 'systemd-boot EFI binary to install (systemd-bootx64.efi, systemd-bootaa64.efi; default: the release build\'s, else Debian\'s systemd-boot-efi of the release\'s architecture)')
    .option('--timeout <seconds>', 'boot menu timeout (default: the release\'s boot.timeout)')
    .option('--arch <arch>', 'target architecture (default: this machine\'s)')
    .option('--cache-dir <dir>', 'input cache for fetching systemd-boot-efi', join('out', 'cache'))
    .option('--force', 'overwrite a disk that already has a partition table')
    .option('--json', 'print the result as JSON')
    .action(async (f: InstallFlags) => {
      const size = sizeFlag(f.size, '--size');
      const espSize = sizeFlag(f.espSize, '--esp-size');
      const rootSize = sizeFlag(f.rootSize, '--root-size');
      const timeout = intFlag(f.timeout, '--timeout', 0, 86400);
      const source = await sourceFromFlags(f);
      try {
        const r = await install({
          disk: f.disk,
          source,
          cacheDir: f.cacheDir ?? join('out', 'cache'),
          ...(size !== undefined ? { size } : {}),
          ...(espSize !== undefined ? { espSize } : {}),
          ...(rootSize !== undefined ? { rootSize } : {}),
          ...(timeout !== undefined ? { timeout } : {}),
          ...(f.cmdline !== undefined ? { cmdline: f.cmdline } : {}),
          ...(f.systemdBoot !== undefined ? { systemdBoot: f.systemdBoot } : {}),
          ...(f.arch !== undefined ? { arch: f.arch } : {}),
          ...(f.force ? { force: true } : {}),
          log: stderrLog,
        });
        const rel = source.release;
        if (f.json) {
          process.stdout.write(`${JSON.stringify({ disk: r.disk, created: r.created, size: r.size, slot: 'a', release: { name: rel.name, version: rel.version, arch: rel.arch }, ...(r.site ? { site: r.site } : {}), partitions: r.layout.partitions }, null, 2)}\n`);
          return;
        }
        process.stdout.write(`installed ${rel.name} ${rel.version} into slot a of ${r.disk} (${r.size} bytes${r.created ? ', new image' : ''})${r.site ? `, site data of ${r.site.name ?? 'an unnamed site'} in STATE` : ''}\n`);
      } finally {
        await source.cleanup();
      }
    });
}
