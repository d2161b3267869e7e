import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { InputError } from '../util/errors.ts';
import { generateKeyPair, readPassphrase } from '../trust/keys.ts';
// verified boot: Secure Boot PK/KEK/db keys for profiles' boot.secureBoot.keys
import { generateSecureBootKeys } from '../boot/secureboot/keys.ts';

interface KeygenFlags {
  outputKeyPrefix: string;
  passphraseFile?: string;
  force?: boolean;
  secureBoot?: string;
  commonName?: string;
}

export function registerKeygenCommand(program: Command): void {
  program
    .command('keygen')
    .description('make an ECDSA P-256 signing key pair in cosign\'s format: PREFIX.key (encrypted) and PREFIX.pub')
    .option('--output-key-prefix <prefix>', 'file name prefix of the key pair', 'cosign')
    .option('--passphrase-file <file>', 'read the passphrase from the first line of this file (default: $COSIGN_PASSWORD)')
    .option('--force', 'overwrite existing key files')
    .option('--secure-boot <dir>', 'instead: make UEFI Secure Boot keys PK, KEK and db (RSA-2048, self-signed, via openssl) in DIR for a profile\'s boot.secureBoot.keys; never replaces a key')
    .option('--common-name <name>', 'with --secure-boot: certificate subject prefix ("<name> PK", …)', 'ossify')
    .action(async (f: KeygenFlags) => {
      if (f.secureBoot !== undefined) {
        const keys = await generateSecureBootKeys(f.secureBoot, { commonName: f.commonName ?? 'ossify' });
        for (const [n, k] of Object.entries(keys)) process.stdout.write(`${n}: ${k.key} (private, keep it safe), ${k.cert}, ${k.certDer}\n`);
        process.stdout.write(`use it in a profile: boot: { entries: uki, secureBoot: { keys: ${f.secureBoot} } }  (relative to the profile file)\n`);
        return;
      }
      const passphrase = await readPassphrase(f.passphraseFile !== undefined ? { passphraseFile: f.passphraseFile } : {});
      if (passphrase === undefined) {
        throw new InputError('no passphrase for the private key', { hint: 'set COSIGN_PASSWORD (empty for none) or pass --passphrase-file FILE' });
      }
      const pair = generateKeyPair(passphrase);
      const keyFile = `${f.outputKeyPrefix}.key`;
      const pubFile = `${f.outputKeyPrefix}.pub`;
      // 'wx' refuses to replace a key someone may still need; --force is the explicit way.
      const flag = f.force ? 'w' : 'wx';
      try {
        await writeFile(keyFile, pair.privatePem, { mode: 0o600, flag });
        await writeFile(pubFile, pair.publicPem, { mode: 0o644, flag });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new InputError(`${(err as NodeJS.ErrnoException).path} exists`, { hint: 'choose another --output-key-prefix, or pass --force to replace it' });
        throw err;
      }
      process.stdout.write(`private key written to ${keyFile}\npublic key written to ${pubFile}\n`);
    });
}
