import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import { InputError } from '../../util/errors.ts';
import { runTool } from './tool.ts';

/**
 * Secure Boot key generation through `openssl req -x509`. Keys are the one output of ossify
 * that is not reproducible, by nature: RSA key generation draws randomness and the
 * certificate's validity starts at the wall clock. Generate them once, keep them (the private
 * keys offline if possible), and pass them to every build; everything signed with them is
 * deterministic.
 */

export interface KeyPair {
  /** PEM private key (mode 0600). */
  key: string;
  /** PEM certificate. */
  cert: string;
  /** The same certificate in DER, as firmware menus and EFI signature lists want it. */
  certDer: string;
}

export interface SecureBootKeys {
  /** Platform Key: owns the firmware's key databases. */
  PK: KeyPair;
  /** Key Exchange Key: signs updates of db/dbx. */
  KEK: KeyPair;
  /** Signature database key: signs the boot loader and UKIs. */
  db: KeyPair;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function checkCommonName(cn: string): void {
  // openssl's -subj syntax gives '/', '+', '=' and '\' meaning; keep names plain.
  if (!/^[A-Za-z0-9 ._()-]{1,64}$/.test(cn)) {
    throw new InputError(`Secure Boot: common name ${JSON.stringify(cn)} must be 1–64 letters, digits, spaces or ._()-`);
  }
}

/** One self-signed RSA-2048/SHA-256 key pair `<dir>/<name>.{key,crt,cer}`; refuses to overwrite. */
export async function generateKeyPair(dir: string, name: string, commonName: string, opts: { days?: number } = {}): Promise<KeyPair> {
  checkCommonName(commonName);
  if (!/^[A-Za-z0-9_-]+$/.test(name)) throw new InputError(`Secure Boot: key name ${JSON.stringify(name)} must be a plain file name`);
  await mkdir(dir, { recursive: true });
  const pair: KeyPair = { key: join(dir, `${name}.key`), cert: join(dir, `${name}.crt`), certDer: join(dir, `${name}.cer`) };
  for (const p of Object.values(pair)) {
    if (await exists(p)) throw new InputError(`Secure Boot: ${p} already exists; refusing to replace a key (losing one can lock you out)`);
  }
  await runTool(
    'openssl',
    'openssl',
    [
      'req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', String(opts.days ?? 3650),
      '-subj', `/CN=${commonName}`, '-keyout', pair.key, '-out', pair.cert,
    ],
    `to generate the ${name} key`,
  );
  await chmod(pair.key, 0o600);
  const der = new X509Certificate(await readFile(pair.cert)).raw;
  await writeFile(pair.certDer, der);
  return pair;
}

/** PK, KEK and db under `dir`, named `<commonName> PK` etc. */
export async function generateSecureBootKeys(dir: string, opts: { commonName?: string; days?: number } = {}): Promise<SecureBootKeys> {
  const cn = opts.commonName ?? 'ossify';
  return {
    PK: await generateKeyPair(dir, 'PK', `${cn} PK`, opts),
    KEK: await generateKeyPair(dir, 'KEK', `${cn} KEK`, opts),
    db: await generateKeyPair(dir, 'db', `${cn} db`, opts),
  };
}
