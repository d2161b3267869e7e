import type { Command } from 'commander';
import { RegistryClient } from '../oci/registry.ts';
import { verifyAttestations } from '../trust/attest.ts';
import { loadPublicKey } from '../trust/keys.ts';
import { digestReference, verifySignatures } from '../trust/signatures.ts';
import { addRegistryOptions, registryOptions, type RegistryFlags } from './registry-flags.ts';

interface VerifyFlags extends RegistryFlags {
  key: string;
  attestations?: boolean;
  json?: boolean;
}

export function registerVerifyCommand(program: Command): void {
  addRegistryOptions(
    program
      .command('verify')
      .description('check that a pushed image carries a valid cosign signature by a public key (exit 1 when it does not)')
      .argument('<ref>', 'REPO@sha256:DIGEST of the image')
      .requiredOption('--key <file>', 'public key (PEM), e.g. cosign.pub')
      .option('--attestations', 'also require a provenance attestation signed by the key and the SBOM it names'),
  )
    .option('--json', 'print the verified signatures as JSON')
    .action(async (refStr: string, f: VerifyFlags) => {
      const ref = digestReference(refStr);
      const key = await loadPublicKey(f.key);
      const client = await RegistryClient.create(ref.registry, registryOptions(f));
      try {
        const signatures = await verifySignatures(client, refStr, key, f.key);
        const att = f.attestations ? await verifyAttestations(client, refStr, key) : undefined;
        if (f.json) {
          process.stdout.write(`${JSON.stringify({ reference: refStr, signatures, ...(att ? { provenance: att.statement, sbomArtifact: att.sbomArtifact } : {}) }, null, 2)}\n`);
          return;
        }
        process.stdout.write(`verified: ${refStr}: ${signatures.length} valid signature${signatures.length === 1 ? '' : 's'} by ${f.key}\n`);
        if (att) process.stdout.write(`verified: provenance (${att.statement.predicateType}) signed by ${f.key}, SBOM ${att.sbomArtifact}\n`);
      } finally {
        await client.close();
      }
    });
}
