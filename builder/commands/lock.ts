import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { lockProfile } from '../lock/lock.ts';
import { loadProfile } from '../profile/load.ts';

/** `ossify lock PROFILE [--update]`: writes `<profile>.lock.yaml` next to the profile. */
export function registerLockCommand(program: Command): void {
  program
    .command('lock')
    .description('pin every fetched input of a profile (packages, images, archives) to an exact version and sha256 in <profile>.lock.yaml')
    .argument('<profile>', 'profile YAML file')
    .option('--update', 're-resolve every input, not only those the lock file lacks')
    .option('--cache-dir <dir>', 'input cache directory', join('out', 'cache'))
    .option('--json', 'print the result as JSON')
    .action(async (profileFile: string, o: { update?: boolean; cacheDir: string; json?: boolean }) => {
      const loaded = await loadProfile(profileFile);
      const r = await lockProfile(loaded, {
        update: o.update === true,
        cacheDir: resolve(o.cacheDir),
        ...(o.json ? {} : { log: (line: string) => process.stderr.write(`  ${line}\n`) }),
      });
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ file: r.file, changed: r.changed, resolved: r.resolved, sources: r.lock.entries }, null, 2)}\n`);
        return;
      }
      const what = r.changed ? 'wrote' : 'unchanged:';
      process.stdout.write(`${what} ${r.file} (${r.lock.entries.length} sources, ${r.resolved} resolved now)\n`);
    });
}
