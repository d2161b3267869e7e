import type { Command } from 'commander';
import { resolve } from 'node:path';
import { profileJsonSchemaText } from '../profile/schema.ts';
import { writeFileAtomic } from '../util/atomic.ts';

/** `ossify schema [-o FILE]`: the profile JSON Schema, for editors (yaml-language-server) and CI. */
export function registerSchemaCommand(program: Command): Command {
  return program
    .command('schema')
    .description('print the JSON Schema of build profiles')
    .option('-o, --output <file>', 'write it to FILE instead of standard output')
    .action(async (opts: { output?: string }) => {
      const text = profileJsonSchemaText();
      if (opts.output === undefined) process.stdout.write(text);
      else await writeFileAtomic(resolve(opts.output), text);
    });
}
