import type { Command } from 'commander';
import { rollback } from '../installer/rollback.ts';
import { stderrLog } from '../installer/cli-support.ts';

export function registerRollbackCommand(program: Command): void {
  program
    .command('rollback')
    .description('make the other slot boot next, if its release is known good')
    .requiredOption('--disk <file>', 'ossify disk image file or block device (not mounted)')
    .option('--force', 'roll back even to a slot whose release has not been proven to boot')
    .option('--json', 'print the result as JSON')
    .action(async (f: { disk: string; force?: boolean; json?: boolean }) => {
      const r = await rollback({ disk: f.disk, ...(f.force ? { force: true } : {}), log: stderrLog });
      process.stdout.write(f.json ? `${JSON.stringify(r, null, 2)}\n` : `slot ${r.to} boots next (was slot ${r.from}): ${r.entryFile} has generation ${r.generation}\n`);
    });
}
