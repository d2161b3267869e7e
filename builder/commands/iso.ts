import type { Command } from 'commander';
import { resolve } from 'node:path';
import { ISO_ARTIFACT, writeInstallerIso } from '../iso/build.ts';

/**
 * `ossify iso OUTDIR`: the installer ISO of a build output (a minimal output path of its
 * own until the output-format registry takes it over as the `iso` format).
 */
export function registerIsoCommand(program: Command): Command {
  return program
    .command('iso')
    .description(`write a UEFI-bootable hybrid installer ISO (${ISO_ARTIFACT}) from a build output: boots from CD or USB and installs the release to a disk`)
    .argument('<outdir>', 'a build output directory (out/<name>-<version>/)')
    .option('-o, --output <file>', `where to write the ISO (default <outdir>/${ISO_ARTIFACT})`)
    .option('--json', 'print the result as JSON')
    .action(async (outDir: string, o: { output?: string; json?: boolean }) => {
      const r = await writeInstallerIso(resolve(outDir), o.output ? resolve(o.output) : undefined);
      if (o.json) process.stdout.write(`${JSON.stringify({ path: r.path, size: r.size, targetDiskSize: r.diskSize })}\n`);
      else process.stdout.write(`${r.path}: ${r.size} bytes; installs to a disk of at least ${r.diskSize} bytes (${Math.ceil(r.diskSize / (1 << 20))} MiB)\n`);
    });
}
