/**
 * The slice of ASN.1 DER that Authenticode and UEFI authenticated variables need: a writer
 * for the structures we build, and a reader just deep enough to lift the issuer and serial
 * number out of an X.509 certificate. DER (not BER) throughout: definite minimal lengths,
 * SET OF sorted, so the same inputs always give the same bytes.
 */

export type Der = Uint8Array;

const TAG = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8String: 0x0c,
  SEQUENCE: 0x30,
  SET: 0x31,
  BMPString: 0x1e,
} as const;

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function encodeLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

export function tlv(tag: number, ...content: Uint8Array[]): Der {
  const body = concat(content);
  return concat([Uint8Array.of(tag), encodeLength(body.length), body]);
}

export const sequence = (...items: Der[]): Der => tlv(TAG.SEQUENCE, ...items);

/** SET OF in DER order: elements sorted by their encodings (X.690 §11.6). */
export function setOf(...items: Der[]): Der {
  const sorted = [...items].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return tlv(TAG.SET, ...sorted);
}

export const octetString = (b: Uint8Array): Der => tlv(TAG.OCTET_STRING, b);
export const nullValue = (): Der => Uint8Array.of(TAG.NULL, 0);
/** A BIT STRING with no unused bits. */
export const bitString = (b: Uint8Array): Der => tlv(TAG.BIT_STRING, Uint8Array.of(0), b);
export const bmpString = (s: string): Der => tlv(TAG.BMPString, Buffer.from(s, 'utf16le').swap16());

export function integer(n: number | bigint): Der {
  let v = BigInt(n);
  if (v < 0n) throw new RangeError('negative INTEGER not needed here');
  const bytes: number[] = [];
  do {
    bytes.unshift(Number(v & 0xffn));
    v >>= 8n;
  } while (v > 0n);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(TAG.INTEGER, Uint8Array.from(bytes));
}

export function oid(dotted: string): Der {
  const arcs = dotted.split('.').map((s) => BigInt(s));
  if (arcs.length < 2) throw new RangeError(`OID ${dotted} needs two arcs`);
  const out: number[] = [];
  const push = (v: bigint) => {
    const chunk: number[] = [Number(v & 0x7fn)];
    for (v >>= 7n; v > 0n; v >>= 7n) chunk.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...chunk);
  };
  push(arcs[0]! * 40n + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return tlv(TAG.OID, Uint8Array.from(out));
}

/** [n] EXPLICIT: a constructed context tag wrapping one whole encoding. */
export const explicit = (n: number, inner: Der): Der => tlv(0xa0 | n, inner);

/** [n] IMPLICIT over a constructed type: same content, the universal tag replaced. */
export function implicitConstructed(n: number, encoded: Der): Der {
  const el = readTlv(encoded, 0);
  return tlv(0xa0 | n, el.content);
}

/** [n] IMPLICIT over a primitive type (e.g. the BMPString in SpcString). */
export function implicitPrimitive(n: number, encoded: Der): Der {
  const el = readTlv(encoded, 0);
  return tlv(0x80 | n, el.content);
}

export const algorithmId = (dotted: string, withNullParams = true): Der =>
  withNullParams ? sequence(oid(dotted), nullValue()) : sequence(oid(dotted));

export interface TlvElement {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  /** Offset just past the content. */
  end: number;
  content: Uint8Array;
  /** The whole encoding, tag through content. */
  raw: Uint8Array;
}

export function readTlv(buf: Uint8Array, at: number): TlvElement {
  if (at + 2 > buf.length) throw new RangeError(`DER: truncated at ${at}`);
  const tag = buf[at]!;
  if ((tag & 0x1f) === 0x1f) throw new RangeError(`DER: multi-byte tags are not supported (at ${at})`);
  let len = buf[at + 1]!;
  let hdr = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new RangeError(`DER: unsupported length form at ${at}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[at + 2 + i]!;
    hdr += n;
  }
  const end = at + hdr + len;
  if (end > buf.length) throw new RangeError(`DER: element at ${at} runs past the end`);
  return { tag, start: at, end, content: buf.subarray(at + hdr, end), raw: buf.subarray(at, end) };
}

export function children(el: TlvElement): TlvElement[] {
  const out: TlvElement[] = [];
  for (let at = 0; at < el.content.length; ) {
    const c = readTlv(el.content, at);
    out.push(c);
    at = c.end;
  }
  return out;
}

/** Issuer Name and serialNumber of an X.509 certificate, as their original encodings. */
export function certificateIssuerAndSerial(certDer: Uint8Array): { issuer: Der; serial: Der } {
  const cert = readTlv(certDer, 0);
  if (cert.tag !== TAG.SEQUENCE) throw new RangeError('X.509: not a DER certificate');
  const tbs = children(cert)[0];
  if (!tbs || tbs.tag !== TAG.SEQUENCE) throw new RangeError('X.509: no tbsCertificate');
  const f = children(tbs);
  const i = f[0]?.tag === 0xa0 ? 1 : 0; // optional [0] version
  const serial = f[i];
  const issuer = f[i + 2];
  if (serial?.tag !== TAG.INTEGER || issuer?.tag !== TAG.SEQUENCE) throw new RangeError('X.509: unexpected tbsCertificate layout');
  return { issuer: Uint8Array.from(issuer.raw), serial: Uint8Array.from(serial.raw) };
}

export { concat as concatBytes };
