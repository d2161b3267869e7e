import type { Command } from 'commander';
import { diskStatus, formatStatus } from '../installer/status.ts';

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('show an ossify disk\'s partitions, the release and boot state of each slot, and which slot boots next')
    .requiredOption('--disk <file>', 'ossify disk image file or block device')
    .option('--verify', 'also check each slot\'s root partition against the digest recorded for it')
    .option('--json', 'print the report as JSON')
    .action(async (f: { disk: string; verify?: boolean; json?: boolean }) => {
      const r = await diskStatus(f.disk, { verify: f.verify ?? false });
      process.stdout.write(f.json ? `${JSON.stringify(r, null, 2)}\n` : formatStatus(r));
    });
}
