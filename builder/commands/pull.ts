import type { Command } from 'commander';
import { progressReporter } from '../oci/progress.ts';
import { PAYLOAD_REQUIRED, RELEASE_JSON } from '../release/artifacts.ts';
import { pullRelease } from '../release/pull.ts';
import { addRegistryOptions, registryOptions, type RegistryFlags } from './registry-flags.ts';

export { pullRelease, type PullOptions, type PullResult } from '../release/pull.ts';

interface PullFlags extends RegistryFlags {
  output: string;
  arch?: string;
  json?: boolean;
  progress: boolean;
}

export function registerPullCommand(program: Command): void {
  addRegistryOptions(
    program
      .command('pull')
      .description('fetch an installer image by digest, verify every byte, and write its payload files and release.json to a directory')
      .argument('<ref>', 'REPO@sha256:DIGEST, as printed by ossify push')
      .requiredOption('-o, --output <dir>', `directory for ${PAYLOAD_REQUIRED.join(', ')} and ${RELEASE_JSON}`)
      .option('--arch <arch>', 'architecture to take from a multi-arch index (default: this machine)')
      .option('--json', 'print the result (digests, release, files, statistics) as JSON'),
  )
    .option('--no-progress', 'no progress output on stderr')
    .action(async (ref: string, f: PullFlags) => {
      const progress = f.progress ? progressReporter() : undefined;
      try {
        const r = await pullRelease(ref, f.output, {
          ...(f.arch !== undefined ? { arch: f.arch } : {}),
          ...registryOptions(f),
          ...(progress ? { onProgress: (e) => progress.onProgress(e) } : {}),
        });
        progress?.finish();
        if (f.json) {
          process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
          return;
        }
        process.stdout.write(`pulled ${r.reference} (${r.release.name} ${r.release.version} ${r.release.arch})\n`);
        for (const file of r.files) process.stdout.write(`  ${r.outDir}/${file.name}  ${file.size} bytes  sha256:${file.sha256}\n`);
      } finally {
        progress?.finish();
      }
    });
}
