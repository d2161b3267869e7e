import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { InputError } from '../../util/errors.ts';
import { derivedGuid } from '../../util/guid.ts';
import { signPeImage } from './authenticode.ts';
import { secureBootAuthFiles } from './efivars.ts';
import { loadSigner, type Signer } from './pkcs7.ts';
import { signPe } from './sbsign.ts';

/**
 * Secure Boot as a build uses it (profile `boot.secureBoot`): the key directory that
 * `ossify keygen --secure-boot DIR` writes, signing of systemd-boot and the UKIs with the db
 * key, and the loader/keys/auto/*.auth files systemd-boot enrols. Keys are only ever read
 * here; ossify never generates one during a build.
 */

export const SECURE_BOOT_KEY_NAMES = ['PK', 'KEK', 'db'] as const;
export type SecureBootKeyName = (typeof SECURE_BOOT_KEY_NAMES)[number];

export interface SecureBootKeySet {
  dir: string;
  signers: Record<SecureBootKeyName, Signer>;
  /** Paths of the PEM files, for the sbsign backend. */
  files: Record<SecureBootKeyName, { key: string; cert: string }>;
}

export async function loadSecureBootKeys(dir: string): Promise<SecureBootKeySet> {
  const signers = {} as Record<SecureBootKeyName, Signer>;
  const files = {} as Record<SecureBootKeyName, { key: string; cert: string }>;
  for (const n of SECURE_BOOT_KEY_NAMES) {
    const key = join(dir, `${n}.key`);
    const cert = join(dir, `${n}.crt`);
    let keyText: string;
    let certBytes: Buffer;
    try {
      keyText = await readFile(key, 'utf8');
      certBytes = await readFile(cert);
    } catch (err) {
      throw new InputError(`boot.secureBoot.keys: cannot read ${n}.key and ${n}.crt in ${dir}`, {
        cause: err,
        hint: `make the keys once with: ossify keygen --secure-boot ${dir}  (keep them; every image signed with them trusts them)`,
      });
    }
    signers[n] = loadSigner(keyText, certBytes);
    files[n] = { key, cert };
  }
  return { dir, signers, files };
}

export type SignerBackend = 'ossify' | 'sbsign';

/** Signs a PE with the db key: deterministic pure TypeScript, or sbsign when asked. */
export async function signWithDb(image: Uint8Array, keys: SecureBootKeySet, backend: SignerBackend = 'ossify'): Promise<Uint8Array> {
  if (backend === 'ossify') return signPeImage(image, keys.signers.db);
  const dir = await mkdtemp(join(tmpdir(), 'ossify-sbsign-'));
  try {
    const input = join(dir, 'image.efi');
    await writeFile(input, image);
    const out = await signPe(input, { key: keys.files.db.key, cert: keys.files.db.cert, output: join(dir, 'signed.efi') });
    return new Uint8Array(await readFile(out));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * PK (self-signed), KEK (signed by PK) and db (signed by KEK) as EFI_VARIABLE_AUTHENTICATION_2
 * files, stamped with the build epoch and owned by a GUID derived from the profile digest.
 */
export function enrollmentFiles(keys: SecureBootKeySet, profileDigest: string, epoch: number): Record<SecureBootKeyName, Uint8Array> {
  return secureBootAuthFiles({
    PK: keys.signers.PK,
    KEK: keys.signers.KEK,
    db: [keys.signers.db.cert],
    owner: derivedGuid(profileDigest, 'secure-boot-owner'),
    timestamp: epoch,
  });
}
