import type { Command } from 'commander';
import { InputError } from '../util/errors.ts';
import { progressReporter } from '../oci/progress.ts';
import { pushBuilds } from '../release/push.ts';
import { addRegistryOptions, registryOptions, type RegistryFlags } from './registry-flags.ts';

export { pushBuild, pushBuilds, type PushOptions, type PushResult } from '../release/push.ts';

interface PushFlags extends RegistryFlags {
  json?: boolean;
  busybox?: string;
  source?: string;
  revision?: string;
  chunkSize?: number;
  mountFrom?: string[];
  progress: boolean;
}

function positiveMiB(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InputError(`--chunk-size ${JSON.stringify(v)} must be a whole number of MiB, at least 1`);
  return Number(v) * (1 << 20);
}

export function registerPushCommand(program: Command): void {
  addRegistryOptions(
    program
      .command('push')
      .description('push the installer image of build outputs to an OCI registry and print REPO@sha256:DIGEST (several outputs, one per architecture, become an image index)')
      .usage('[options] OUTDIR... REPO[:TAG]')
      .argument('<outdir-and-ref...>', 'build output directories (out/<name>-<version>/), then the target repository')
      .option('--json', 'print the result (reference, digest, tags, transfer statistics) as JSON'),
  )
    .option('--busybox <path>', 'static busybox for building the image when OUTDIR/oci/ is missing or stale (default /bin/busybox)')
    .option('--source <url>', 'org.opencontainers.image.source annotation')
    .option('--revision <rev>', 'org.opencontainers.image.revision annotation')
    .option('--chunk-size <MiB>', 'upload large blobs in chunks of this many MiB (default 32)', positiveMiB)
    .option('--mount-from <repo>', 'repository of the same registry to mount blobs from (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--no-progress', 'no progress output on stderr')
    .action(async (args: string[], f: PushFlags) => {
      if (args.length < 2) throw new InputError('push needs at least one OUTDIR and a REPO[:TAG]', { hint: 'ossify push out/ossify-default-1.0.0 registry.example/ossify/os:1.0.0' });
      const ref = args[args.length - 1]!;
      const outDirs = args.slice(0, -1);
      const progress = f.progress ? progressReporter() : undefined;
      try {
        const result = await pushBuilds(outDirs, ref, {
          ...registryOptions(f),
          ...(f.busybox !== undefined ? { busyboxPath: f.busybox } : {}),
          ...(f.source !== undefined ? { source: f.source } : {}),
          ...(f.revision !== undefined ? { revision: f.revision } : {}),
          ...(f.chunkSize !== undefined ? { chunkSize: f.chunkSize } : {}),
          ...(f.mountFrom ? { mountFrom: f.mountFrom } : {}),
          ...(progress ? { onProgress: (e) => progress.onProgress(e) } : {}),
        });
        progress?.finish();
        process.stdout.write(f.json ? `${JSON.stringify(result, null, 2)}\n` : `${result.reference}\n`);
      } finally {
        progress?.finish();
      }
    });
}
