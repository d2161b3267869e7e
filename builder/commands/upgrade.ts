import type { Command } from 'commander';
import { diskArch } from '../installer/layout.ts';
import { upgrade } from '../installer/upgrade.ts';
import { addSourceOptions, intFlag, sourceFromFlags, stderrLog, type SourceCliFlags } from '../installer/cli-support.ts';

interface UpgradeFlags extends SourceCliFlags {
  disk: string;
  tries?: string;
  cmdline?: string;
  force?: boolean;
  replaceSite?: boolean;
  json?: boolean;
}

export function registerUpgradeCommand(program: Command): void {
  addSourceOptions(
    program
      .command('upgrade')
      .description('write a release into the inactive slot, verify it, and make it boot next on trial (boot counting falls back if it never comes up)'),
  )
    .requiredOption('--disk <file>', 'ossify disk image file or block device (not mounted)')
    .option('--tries <n>', 'boot attempts before the new slot counts as bad (default: the release\'s boot.tries, 3 unless its profile says otherwise)')
    .option('--cmdline <args>', 'kernel arguments besides the slot\'s own (default: the release\'s, as its profile\'s kernel.cmdline; a release made by an older ossify: the active entry\'s)')
    .option('--arch <arch>', 'architecture to take from a multi-arch image index (default: the disk\'s)')
    .option('--force', 'upgrade even while the next-boot slot is still on trial')
    .option('--replace-site', 'write a site release\'s data to STATE even when the disk holds another site\'s')
    .option('--json', 'print the result as JSON')
    .action(async (f: UpgradeFlags) => {
      const tries = intFlag(f.tries, '--tries', 1, 9);
      // From a multi-arch index, the image of the disk's architecture.
      const arch = f.arch ?? (f.image !== undefined ? await diskArch(f.disk) : undefined);
      const source = await sourceFromFlags({ ...f, ...(arch !== undefined ? { arch } : {}) });
      try {
        const r = await upgrade({
          disk: f.disk,
          source,
          ...(tries !== undefined ? { tries } : {}),
          ...(f.cmdline !== undefined ? { cmdline: f.cmdline } : {}),
          ...(f.force ? { force: true } : {}),
          ...(f.replaceSite ? { replaceSite: true } : {}),
          log: stderrLog,
        });
        const rel = source.release;
        if (f.json) {
          process.stdout.write(`${JSON.stringify({ ...r, release: { name: rel.name, version: rel.version } }, null, 2)}\n`);
          return;
        }
        process.stdout.write(
          r.alreadyInstalled
            ? `${rel.name} ${rel.version} is already in slot ${r.slot} and boots next (${r.entryFile})\n`
            : `upgraded slot ${r.slot} of ${f.disk} to ${rel.name} ${rel.version}; it boots next with ${r.tries} tries (${r.entryFile})\n`,
        );
        if (r.site) process.stdout.write(`site data of ${r.site.name ?? 'an unnamed site'} ${r.site.written ? 'written to' : 'already on'} STATE\n`);
      } finally {
        await source.cleanup();
      }
    });
}
