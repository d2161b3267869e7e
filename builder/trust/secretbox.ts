import { timingSafeEqual } from 'node:crypto';

/**
 * NaCl `crypto_secretbox` (XSalsa20 + Poly1305), the cipher of cosign's encrypted private key
 * files. node:crypto has neither Salsa20 nor a standalone Poly1305, so both are here; the
 * output format is Go's and libsodium's "easy" layout: 16-byte tag, then the ciphertext.
 * Only key files go through it (a few hundred bytes), so clarity wins over speed.
 */

export const KEY_BYTES = 32;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;

// "expand 32-byte k"
const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574] as const;

const rotl = (v: number, c: number) => ((v << c) | (v >>> (32 - c))) >>> 0;

function le32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** The 20 Salsa20 rounds in place (10 column+row double rounds). */
function rounds(x: Uint32Array): void {
  const qr = (a: number, b: number, c: number, d: number) => {
    x[b] = x[b]! ^ rotl((x[a]! + x[d]!) >>> 0, 7);
    x[c] = x[c]! ^ rotl((x[b]! + x[a]!) >>> 0, 9);
    x[d] = x[d]! ^ rotl((x[c]! + x[b]!) >>> 0, 13);
    x[a] = x[a]! ^ rotl((x[d]! + x[c]!) >>> 0, 18);
  };
  for (let i = 0; i < 10; i++) {
    qr(0, 4, 8, 12);
    qr(5, 9, 13, 1);
    qr(10, 14, 2, 6);
    qr(15, 3, 7, 11);
    qr(0, 1, 2, 3);
    qr(5, 6, 7, 4);
    qr(10, 11, 8, 9);
    qr(15, 12, 13, 14);
  }
}

/** The initial state: constants on the diagonal, the key around them, 16 bytes of `input` in the middle. */
function state(key: Uint8Array, input: Uint8Array): Uint32Array {
  const s = new Uint32Array(16);
  s[0] = SIGMA[0];
  s[5] = SIGMA[1];
  s[10] = SIGMA[2];
  s[15] = SIGMA[3];
  for (let i = 0; i < 4; i++) {
    s[1 + i] = le32(key, 4 * i);
    s[11 + i] = le32(key, 16 + 4 * i);
    s[6 + i] = le32(input, 4 * i);
  }
  return s;
}

/** HSalsa20: derives XSalsa20's subkey from the key and the nonce's first 16 bytes. */
export function hsalsa20(key: Uint8Array, nonce16: Uint8Array): Uint8Array {
  const x = state(key, nonce16);
  rounds(x);
  const out = new Uint8Array(32);
  const dv = new DataView(out.buffer);
  [0, 5, 10, 15, 6, 7, 8, 9].forEach((w, i) => dv.setUint32(4 * i, x[w]!, true));
  return out;
}

/** XORs `data` with the XSalsa20 keystream of (key, 24-byte nonce), starting at block 0. */
export function xsalsa20Xor(key: Uint8Array, nonce: Uint8Array, data: Uint8Array): Uint8Array {
  if (key.length !== KEY_BYTES || nonce.length !== NONCE_BYTES) throw new RangeError('xsalsa20 needs a 32-byte key and a 24-byte nonce');
  const sub = hsalsa20(key, nonce.subarray(0, 16));
  const input = new Uint8Array(16);
  input.set(nonce.subarray(16, 24), 0);
  const out = new Uint8Array(data.length);
  const block = new Uint8Array(64);
  const bdv = new DataView(block.buffer);
  for (let off = 0, counter = 0; off < data.length; off += 64, counter++) {
    // 64-bit little-endian block counter in input bytes 8..15
    const cdv = new DataView(input.buffer);
    cdv.setUint32(8, counter >>> 0, true);
    cdv.setUint32(12, Math.floor(counter / 2 ** 32), true);
    const init = state(sub, input);
    const x = Uint32Array.from(init);
    rounds(x);
    for (let i = 0; i < 16; i++) bdv.setUint32(4 * i, (x[i]! + init[i]!) >>> 0, true);
    const n = Math.min(64, data.length - off);
    for (let i = 0; i < n; i++) out[off + i] = data[off + i]! ^ block[i]!;
  }
  return out;
}

const P1305 = (1n << 130n) - 5n;
const CLAMP = 0x0ffffffc0ffffffc0ffffffc0fffffffn;

function leBig(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

/** Poly1305 one-time authenticator (RFC 8439 §2.5) with a 32-byte one-time key. */
export function poly1305(key: Uint8Array, msg: Uint8Array): Uint8Array {
  if (key.length !== 32) throw new RangeError('poly1305 needs a 32-byte key');
  const r = leBig(key.subarray(0, 16)) & CLAMP;
  const s = leBig(key.subarray(16, 32));
  let acc = 0n;
  for (let off = 0; off < msg.length; off += 16) {
    const chunk = msg.subarray(off, Math.min(off + 16, msg.length));
    acc = ((acc + leBig(chunk) + (1n << BigInt(8 * chunk.length))) * r) % P1305;
  }
  let tag = (acc + s) & ((1n << 128n) - 1n);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    out[i] = Number(tag & 0xffn);
    tag >>= 8n;
  }
  return out;
}

/** `secretbox.Seal`: tag ‖ ciphertext. The first 32 keystream bytes are the Poly1305 key, the rest encrypt. */
export function secretboxSeal(plaintext: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array {
  const padded = new Uint8Array(32 + plaintext.length);
  padded.set(plaintext, 32);
  const stream = xsalsa20Xor(key, nonce, padded);
  const ct = stream.subarray(32);
  const out = new Uint8Array(TAG_BYTES + ct.length);
  out.set(poly1305(stream.subarray(0, 32), ct), 0);
  out.set(ct, TAG_BYTES);
  return out;
}

/** `secretbox.Open`: the plaintext, or undefined when the tag does not authenticate (wrong key or altered bytes). */
export function secretboxOpen(box: Uint8Array, nonce: Uint8Array, key: Uint8Array): Uint8Array | undefined {
  if (box.length < TAG_BYTES) return undefined;
  const tag = box.subarray(0, TAG_BYTES);
  const ct = box.subarray(TAG_BYTES);
  const polyKey = xsalsa20Xor(key, nonce, new Uint8Array(32));
  if (!timingSafeEqual(poly1305(polyKey, ct), tag)) return undefined;
  const padded = new Uint8Array(32 + ct.length);
  padded.set(ct, 32);
  return xsalsa20Xor(key, nonce, padded).subarray(32);
}
