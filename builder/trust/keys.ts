import { type KeyObject, createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, scryptSync } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { InputError } from '../util/errors.ts';
import { NONCE_BYTES, secretboxOpen, secretboxSeal } from './secretbox.ts';

/**
 * cosign's key files. The private key is PKCS#8 DER, encrypted the way go-tuf's (now
 * go-securesystemslib's) `encrypted` package does it: scrypt derives a secretbox key from the
 * passphrase, and the result is JSON inside a PEM block. skopeo 1.9 (containers/image 5.23)
 * reads only this encrypted form, and only under the PEM type "ENCRYPTED COSIGN PRIVATE KEY";
 * newer cosign writes "ENCRYPTED SIGSTORE PRIVATE KEY". We write the older name, which every
 * cosign and skopeo reads, and accept both (plus an unencrypted PKCS#8 EC key, for keys that
 * come from elsewhere).
 */

export const COSIGN_PRIVATE_PEM = 'ENCRYPTED COSIGN PRIVATE KEY';
export const SIGSTORE_PRIVATE_PEM = 'ENCRYPTED SIGSTORE PRIVATE KEY';

// go-tuf 0.5 accepts only N=2^15; later versions also 2^16 and 2^17. Writing 2^15 keeps skopeo 1.9 able to read our keys.
const WRITE_SCRYPT = { N: 32768, r: 8, p: 1 } as const;
const READ_SCRYPT_N = new Set([32768, 65536, 131072]);

export function pemEncode(type: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN ${type}-----\n${b64}-----END ${type}-----\n`;
}

export function pemDecode(text: string, origin: string): { type: string; der: Buffer } {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) throw new InputError(`${origin} holds no PEM block`);
  return { type: m[1]!, der: Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64') };
}

function scryptKey(passphrase: string, salt: Uint8Array, N: number, r: number, p: number): Buffer {
  return scryptSync(Buffer.from(passphrase, 'utf8'), salt, 32, { N, r, p, maxmem: 256 * N * r + (1 << 20) });
}

/** The JSON go-tuf's `encrypted.Encrypt` produces, field order as Go marshals it. */
export function encryptPrivateKeyDer(der: Uint8Array, passphrase: string): Buffer {
  const salt = randomBytes(32);
  const nonce = randomBytes(NONCE_BYTES);
  const { N, r, p } = WRITE_SCRYPT;
  const box = secretboxSeal(der, nonce, scryptKey(passphrase, salt, N, r, p));
  const doc = {
    kdf: { name: 'scrypt', params: { N, r, p }, salt: salt.toString('base64') },
    cipher: { name: 'nacl/secretbox', nonce: nonce.toString('base64') },
    ciphertext: Buffer.from(box).toString('base64'),
  };
  return Buffer.from(JSON.stringify(doc));
}

export function decryptPrivateKeyDer(encrypted: Uint8Array, passphrase: string, origin: string): Buffer {
  let doc: { kdf?: { name?: string; params?: { N?: number; r?: number; p?: number }; salt?: string }; cipher?: { name?: string; nonce?: string }; ciphertext?: string };
  try {
    doc = JSON.parse(Buffer.from(encrypted).toString('utf8')) as typeof doc;
  } catch (err) {
    throw new InputError(`${origin}: the encrypted key is not JSON`, { cause: err });
  }
  const { kdf, cipher, ciphertext } = doc;
  if (kdf?.name !== 'scrypt' || cipher?.name !== 'nacl/secretbox' || typeof ciphertext !== 'string') {
    throw new InputError(`${origin}: unsupported key encryption (want scrypt + nacl/secretbox)`);
  }
  const { N, r, p } = kdf.params ?? {};
  // Bounded like go-tuf's CheckParams: a tampered file must not make us spend gigabytes on scrypt.
  if (N === undefined || !READ_SCRYPT_N.has(N) || r !== 8 || p !== 1) throw new InputError(`${origin}: unsupported scrypt parameters`);
  const salt = Buffer.from(kdf.salt ?? '', 'base64');
  const nonce = Buffer.from(cipher.nonce ?? '', 'base64');
  if (nonce.length !== NONCE_BYTES) throw new InputError(`${origin}: the secretbox nonce is not ${NONCE_BYTES} bytes`);
  const plain = secretboxOpen(Buffer.from(ciphertext, 'base64'), nonce, scryptKey(passphrase, salt, N, r, p));
  if (!plain) throw new InputError(`${origin}: cannot decrypt the private key: wrong passphrase, or the file was altered`, { hint: 'set COSIGN_PASSWORD or pass --passphrase-file with the passphrase the key was made with' });
  return Buffer.from(plain);
}

function assertP256(key: KeyObject, origin: string): void {
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new InputError(`${origin} is not an ECDSA P-256 key`, { hint: 'cosign-compatible signatures use ECDSA P-256 keys: make one with ossify keygen' });
  }
}

export interface KeyPairFiles {
  privatePem: string;
  publicPem: string;
}

/** A new ECDSA P-256 key pair as cosign writes it: `cosign.key` (encrypted) and `cosign.pub`. */
export function generateKeyPair(passphrase: string): KeyPairFiles {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  return {
    privatePem: pemEncode(COSIGN_PRIVATE_PEM, encryptPrivateKeyDer(der, passphrase)),
    publicPem: publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}

export function parsePrivateKey(text: string, passphrase: string | undefined, origin: string): KeyObject {
  const { type, der } = pemDecode(text, origin);
  let key: KeyObject;
  if (type === COSIGN_PRIVATE_PEM || type === SIGSTORE_PRIVATE_PEM) {
    if (passphrase === undefined) {
      throw new InputError(`${origin} is encrypted and no passphrase was given`, { hint: 'set COSIGN_PASSWORD or pass --passphrase-file' });
    }
    key = createPrivateKey({ key: decryptPrivateKeyDer(der, passphrase, origin), format: 'der', type: 'pkcs8' });
  } else if (type === 'PRIVATE KEY' || type === 'EC PRIVATE KEY') {
    key = createPrivateKey({ key: text, format: 'pem' });
  } else {
    throw new InputError(`${origin}: unsupported PEM type ${JSON.stringify(type)}`, { hint: `expected "${COSIGN_PRIVATE_PEM}" (ossify keygen, cosign generate-key-pair)` });
  }
  assertP256(key, origin);
  return key;
}

export function parsePublicKey(text: string, origin: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: text, format: 'pem' });
  } catch (err) {
    throw new InputError(`${origin} is not a PEM public key`, { cause: err });
  }
  assertP256(key, origin);
  return key;
}

async function readKeyFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new InputError(`cannot read ${what} ${path}`, { cause: err });
  }
}

export async function loadPrivateKey(path: string, passphrase: string | undefined): Promise<KeyObject> {
  return parsePrivateKey(await readKeyFile(path, 'private key'), passphrase, path);
}

export async function loadPublicKey(path: string): Promise<KeyObject> {
  return parsePublicKey(await readKeyFile(path, 'public key'), path);
}

/** sha256 of the key's SPKI DER: the key id DSSE signatures carry, so a verifier can tell keys apart. */
export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256').update(pub.export({ format: 'der', type: 'spki' })).digest('hex');
}

/**
 * The passphrase of a key, like cosign and skopeo take it: the first line of a passphrase file
 * (without its line ending), else COSIGN_PASSWORD (which may be empty, meaning no passphrase).
 */
export async function readPassphrase(opts: { passphraseFile?: string; env?: NodeJS.ProcessEnv }): Promise<string | undefined> {
  if (opts.passphraseFile !== undefined) {
    const text = await readKeyFile(opts.passphraseFile, 'passphrase file');
    if (text === '') throw new InputError(`passphrase file ${opts.passphraseFile} is empty`);
    return text.split('\n', 1)[0]!.replace(/\r$/, '');
  }
  return (opts.env ?? process.env).COSIGN_PASSWORD;
}
