import { createHash } from 'node:crypto';

/**
 * A GUID derived from a seed (e.g. profile digest + partition label), never random, so the
 * same profile always yields the same disk. Shaped as an RFC 4122 version-5-like GUID
 * (SHA-256 truncated rather than SHA-1; the variant and version bits are set so tools
 * treat it as well-formed).
 */
export function derivedGuid(...seed: string[]): string {
  const h = createHash('sha256').update(seed.join('\0')).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`.toUpperCase();
}

/** GUID string → the 16 on-disk bytes (mixed-endian, as GPT and UEFI store them). */
export function guidToBytes(guid: string): Uint8Array {
  const hex = guid.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a GUID: ${guid}`);
  const b = Buffer.from(hex, 'hex');
  const out = Buffer.alloc(16);
  out.writeUInt32LE(b.readUInt32BE(0), 0);
  out.writeUInt16LE(b.readUInt16BE(4), 4);
  out.writeUInt16LE(b.readUInt16BE(6), 6);
  b.copy(out, 8, 8, 16);
  return out;
}

export function bytesToGuid(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, 16);
  const hex =
    b.readUInt32LE(0).toString(16).padStart(8, '0') +
    b.readUInt16LE(4).toString(16).padStart(4, '0') +
    b.readUInt16LE(6).toString(16).padStart(4, '0') +
    b.subarray(8, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`.toUpperCase();
}
