import { createHash, verify, X509Certificate } from 'node:crypto';
import { DIR_SECURITY, parsePe, PeFormatError, updatePeChecksum, type PeHeaders } from '../../formats/pe/index.ts';
import { InputError } from '../../util/errors.ts';
import {
  algorithmId,
  bitString,
  bmpString,
  certificateIssuerAndSerial,
  children,
  explicit,
  implicitPrimitive,
  octetString,
  oid,
  readTlv,
  sequence,
  type Der,
} from './der.ts';
import { attribute, OID, signedData, wrapContentInfo, type Signer } from './pkcs7.ts';

/**
 * Authenticode signing of PE images in TypeScript (Microsoft "Windows Authenticode Portable
 * Executable Signature Format"), producing what `sbsign` produces minus its signingTime
 * attribute — so signing is deterministic. UEFI firmware (EDK2's DxeImageVerificationLib)
 * and `sbverify` check the same two things: the PE image hash below, and a PKCS #7 signature
 * over an SpcIndirectDataContent that carries it.
 */

const WIN_CERT_REVISION_2_0 = 0x0200;
const WIN_CERT_TYPE_PKCS_SIGNED_DATA = 0x0002;
const CERT_ALIGN = 8;

function certDirOffset(h: PeHeaders): number {
  if (h.dataDirectories.length <= DIR_SECURITY) throw new PeFormatError('the optional header has no certificate table directory entry');
  return h.offsets.dataDirectories + DIR_SECURITY * 8;
}

/**
 * The Authenticode image hash: headers without CheckSum and the certificate table entry,
 * then each section's raw data in file order, then any data after the last section up to the
 * certificate table — the same ranges EDK2 and sbsign hash.
 */
export function authenticodeDigest(image: Uint8Array): Buffer {
  const h = parsePe(image);
  const dir = certDirOffset(h);
  const cert = h.dataDirectories[DIR_SECURITY]!;
  const hash = createHash('sha256');
  hash.update(image.subarray(0, h.offsets.checkSum));
  hash.update(image.subarray(h.offsets.checkSum + 4, dir));
  hash.update(image.subarray(dir + 8, h.sizeOfHeaders));
  let hashed = h.sizeOfHeaders;
  const sections = h.sections.filter((s) => s.sizeOfRawData > 0).sort((a, b) => a.pointerToRawData - b.pointerToRawData);
  for (const s of sections) {
    hash.update(image.subarray(s.pointerToRawData, s.pointerToRawData + s.sizeOfRawData));
    hashed += s.sizeOfRawData;
  }
  const end = image.length - cert.size;
  if (hashed < end) hash.update(image.subarray(hashed, end));
  return hash.digest();
}

/** SpcIndirectDataContent { SpcAttributeTypeAndOptionalValue(PE image data), DigestInfo }. */
function spcIndirectDataContent(digest: Uint8Array): Der {
  // SpcPeImageData: no flags, file = SpcLink.file [2] → SpcString.unicode [0] "<<<Obsolete>>>",
  // the value every signer writes since the field lost its meaning.
  const peImageData = sequence(bitString(new Uint8Array()), explicit(0, explicit(2, implicitPrimitive(0, bmpString('<<<Obsolete>>>')))));
  return sequence(sequence(oid(OID.spcPeImageData), peImageData), sequence(algorithmId(OID.sha256), octetString(digest)));
}

/** The detached Authenticode signature (ContentInfo DER) for an image. */
export function authenticodeSignature(image: Uint8Array, signer: Signer): Der {
  const idc = spcIndirectDataContent(authenticodeDigest(image));
  // messageDigest covers the SpcIndirectDataContent's contents, without its SEQUENCE header.
  const idcContent = readTlv(idc, 0).content;
  return wrapContentInfo(
    signedData({
      signer,
      contentType: OID.spcIndirectDataContent,
      content: idc,
      digestedBytes: idcContent,
      extraAttributes: [attribute(OID.spcSpOpusInfo, sequence())],
    }),
  );
}

/**
 * Signs an unsigned PE image: pads it to 8 bytes (the pad is part of the hashed image, as
 * EDK2 hashes it), appends a WIN_CERTIFICATE holding the signature, points the certificate
 * table directory entry at it and refreshes CheckSum (which Authenticode does not hash).
 */
export function signPeImage(image: Uint8Array, signer: Signer): Uint8Array {
  const h = parsePe(image);
  const dir = certDirOffset(h);
  const existing = h.dataDirectories[DIR_SECURITY]!;
  if (existing.size !== 0 || existing.virtualAddress !== 0) {
    throw new InputError('Authenticode: the image is already signed; sign the unsigned image (appending signatures is not supported)');
  }
  const dataLen = Math.ceil(image.length / CERT_ALIGN) * CERT_ALIGN;
  const unsignedPadded = new Uint8Array(dataLen);
  unsignedPadded.set(image);
  const sig = authenticodeSignature(unsignedPadded, signer);
  const certLen = 8 + sig.length;
  const certSpace = Math.ceil(certLen / CERT_ALIGN) * CERT_ALIGN;
  const out = new Uint8Array(dataLen + certSpace);
  out.set(unsignedPadded);
  const dv = new DataView(out.buffer);
  dv.setUint32(dataLen, certLen, true);
  dv.setUint16(dataLen + 4, WIN_CERT_REVISION_2_0, true);
  dv.setUint16(dataLen + 6, WIN_CERT_TYPE_PKCS_SIGNED_DATA, true);
  out.set(sig, dataLen + 8);
  // The certificate table's "VirtualAddress" is a file offset, unlike every other directory.
  dv.setUint32(dir, dataLen, true);
  dv.setUint32(dir + 4, certSpace, true);
  updatePeChecksum(out, h.offsets.checkSum);
  return out;
}

export interface EmbeddedSignature {
  revision: number;
  type: number;
  /** PKCS #7 ContentInfo DER. */
  data: Uint8Array;
}

/** The WIN_CERTIFICATE entries of a signed image. */
export function readPeSignatures(image: Uint8Array): EmbeddedSignature[] {
  const h = parsePe(image);
  const d = h.dataDirectories[DIR_SECURITY];
  if (!d || d.size === 0) return [];
  if (d.virtualAddress + d.size > image.length) throw new PeFormatError('the certificate table lies past the end of the file');
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const out: EmbeddedSignature[] = [];
  for (let at = d.virtualAddress; at + 8 <= d.virtualAddress + d.size; ) {
    const len = dv.getUint32(at, true);
    if (len < 8) throw new PeFormatError(`WIN_CERTIFICATE at ${at} has length ${len}`);
    out.push({ revision: dv.getUint16(at + 4, true), type: dv.getUint16(at + 6, true), data: image.subarray(at + 8, at + len) });
    at += Math.ceil(len / CERT_ALIGN) * CERT_ALIGN;
  }
  return out;
}

export interface PeSigner {
  /** The signer's X.509 certificate (DER), from the signature's certificate set. */
  certificate: Uint8Array;
  /** sha256 of `certificate`, hex: what two signatures by the same key share. */
  fingerprint: string;
  subject: string;
  /** The signature covers this image (its Authenticode digest) and verifies with the certificate's key. */
  valid: boolean;
}

const OID_MESSAGE_DIGEST = '1.2.840.113549.1.9.4';

function oidText(content: Uint8Array): string {
  const out: number[] = [Math.floor(content[0]! / 40), content[0]! % 40];
  let v = 0;
  for (let i = 1; i < content.length; i++) {
    v = v * 128 + (content[i]! & 0x7f);
    if (!(content[i]! & 0x80)) {
      out.push(v);
      v = 0;
    }
  }
  return out.join('.');
}

/**
 * Who signed a PE image, read from its Authenticode signatures (the certificate that the
 * SignerInfo's issuer and serial name), and whether each signature holds for this image: the
 * digest it carries is the image's Authenticode digest, its messageDigest attribute covers
 * that, and the RSA signature over the attributes verifies with the certificate's key — what
 * firmware checks before it looks the certificate up in db. An image that is not a PE, or is
 * unsigned, has no signers.
 */
export function peSigners(image: Uint8Array): PeSigner[] {
  let sigs: EmbeddedSignature[];
  try {
    sigs = readPeSignatures(image);
  } catch {
    return [];
  }
  const out: PeSigner[] = [];
  for (const s of sigs) {
    try {
      const ci = children(readTlv(s.data, 0));
      const sd = children(children(ci[1]!)[0]!);
      const encap = children(sd[2]!);
      const idc = children(encap[1]!)[0]!;
      const idcDigest = children(children(idc)[1]!)[1]!.content;
      const certSet = sd.find((e) => e.tag === 0xa0);
      const signerInfo = children(sd[sd.length - 1]!)[0]!;
      const si = children(signerInfo);
      const sid = children(si[1]!);
      const certs = certSet ? children(certSet) : [];
      const cert = certs.find((c) => {
        const { issuer, serial } = certificateIssuerAndSerial(c.raw);
        return Buffer.from(issuer).equals(Buffer.from(sid[0]!.raw)) && Buffer.from(serial).equals(Buffer.from(sid[1]!.raw));
      });
      if (!cert) continue;
      const attrs = si.find((e) => e.tag === 0xa0);
      const signature = si.find((e, i) => i > 3 && e.tag === 0x04);
      let valid = false;
      if (attrs && signature && Buffer.from(idcDigest).equals(authenticodeDigest(image))) {
        const md = children(attrs).find((a) => oidText(children(a)[0]!.content) === OID_MESSAGE_DIGEST);
        const mdValue = md ? children(children(md)[1]!)[0]!.content : undefined;
        const idcContentDigest = createHash('sha256').update(idc.content).digest();
        if (mdValue && Buffer.from(mdValue).equals(idcContentDigest)) {
          const signed = Uint8Array.from(attrs.raw);
          signed[0] = 0x31; // the signature covers the attributes as a SET
          valid = verify('sha256', signed, new X509Certificate(Buffer.from(cert.raw)).publicKey, signature.content);
        }
      }
      const x = new X509Certificate(Buffer.from(cert.raw));
      out.push({ certificate: Uint8Array.from(cert.raw), fingerprint: createHash('sha256').update(cert.raw).digest('hex'), subject: x.subject.replace(/\n/g, ', '), valid });
    } catch {
      /* a signature this reader cannot parse names nobody */
    }
  }
  return out;
}
