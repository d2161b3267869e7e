import type { Command } from 'commander';
import { RegistryClient } from '../oci/registry.ts';
import { attachBuildOutput } from '../trust/attest.ts';
import { loadPrivateKey, readPassphrase } from '../trust/keys.ts';
import { digestReference, signImage } from '../trust/signatures.ts';
import { addRegistryOptions, registryOptions, type RegistryFlags } from './registry-flags.ts';

interface SignFlags extends RegistryFlags {
  key: string;
  passphraseFile?: string;
  build?: string;
  json?: boolean;
}

export function registerSignCommand(program: Command): void {
  addRegistryOptions(
    program
      .command('sign')
      .description('sign a pushed image (cosign-compatible: simple-signing payload under the sha256-<digest>.sig tag, and an OCI 1.1 referrer where the registry supports it)')
      .argument('<ref>', 'REPO@sha256:DIGEST of the image')
      .requiredOption('--key <file>', 'private key (ossify keygen or cosign generate-key-pair)')
      .option('--passphrase-file <file>', 'read the key passphrase from the first line of this file (default: $COSIGN_PASSWORD)')
      .option('--build <outdir>', 'the build output the image was pushed from: attach its SBOM and its provenance, signed with the same key'),
  )
    .option('--json', 'print what was stored as JSON')
    .action(async (refStr: string, f: SignFlags) => {
      const ref = digestReference(refStr);
      const key = await loadPrivateKey(f.key, await readPassphrase(f.passphraseFile !== undefined ? { passphraseFile: f.passphraseFile } : {}));
      const client = await RegistryClient.create(ref.registry, registryOptions(f));
      try {
        const signed = await signImage(client, refStr, key);
        const attached = f.build !== undefined ? await attachBuildOutput(client, refStr, f.build, key) : undefined;
        if (f.json) {
          process.stdout.write(`${JSON.stringify({ ...signed, ...(attached ? { attached } : {}) }, null, 2)}\n`);
          return;
        }
        process.stdout.write(`${signed.added ? 'signed' : 'already signed by this key'}: ${signed.reference}\n`);
        if (attached) process.stdout.write(`attached SBOM ${attached.sbom} and signed provenance ${attached.provenance?.referrer}\n`);
      } finally {
        await client.close();
      }
    });
}
