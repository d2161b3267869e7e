import type { Command } from 'commander';
import { stringify } from 'yaml';
import { loadProfile, type LoadedProfile } from '../profile/load.ts';

/**
 * `ossify validate PROFILE [--json]`: loads the profile exactly as a build would and prints
 * what the build would use. Invalid profiles throw a ProfileError; the CLI prints it and
 * exits 2.
 */
export function registerValidateCommand(program: Command): Command {
  return program
    .command('validate')
    .description('check a profile; print its name, version, digest and resolved settings')
    .argument('<profile>', 'profile YAML file')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, opts: { json?: boolean }) => {
      const loaded = await loadProfile(file);
      process.stdout.write(renderValidation(loaded, opts.json === true));
    });
}

export function renderValidation(loaded: LoadedProfile, json: boolean): string {
  const { profile, digest, epoch, file, chain } = loaded;
  if (json) return `${JSON.stringify({ name: profile.name, version: profile.version, digest, epoch, file, chain, profile }, null, 2)}\n`;
  const head = [`name:    ${profile.name}`, `version: ${profile.version}`, `digest:  ${digest}`, `epoch:   ${epoch}`, `file:    ${file}`];
  if (chain.length > 1) head.push(`extends: ${chain.slice(1).join(' → ')}`);
  return `${head.join('\n')}\n\n# resolved profile\n${stringify(profile, { lineWidth: 0 })}`;
}
