import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildUki } from '../../builder/boot/uki.ts';
import { children, readTlv } from '../../builder/boot/secureboot/der.ts';
import {
  authenticodeDigest,
  efiSignatureList,
  efiTime,
  generateKeyPair,
  generateSecureBootKeys,
  loadSigner,
  parseAuthVariable,
  readPeSignatures,
  secureBootAuthFiles,
  signEfiVariable,
  signPe,
  signPeImage,
  verifyPe,
  wrapContentInfo,
  EFI_IMAGE_SECURITY_DATABASE_GUID,
  type SecureBootKeys,
  type Signer,
} from '../../builder/boot/secureboot/index.ts';
import { parsePe, peChecksum } from '../../builder/formats/pe/index.ts';
import { derivedGuid } from '../../builder/util/guid.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';

const STUB_PATH = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const dir = mkdtempSync(join(tmpdir(), 'ossify-sb-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const tmp = (name: string) => join(dir, `${seq++}-${name}`);
const OWNER = derivedGuid('test-profile', 'secure-boot-owner');
const EPOCH = 1_700_000_000;

let keys: SecureBootKeys;
const signer = (k: keyof SecureBootKeys): Signer => loadSigner(readFileSync(keys[k].key, 'utf8'), readFileSync(keys[k].cert));

function stub(): Buffer {
  try {
    return readFileSync(STUB_PATH);
  } catch {
    throw new Error(`${STUB_PATH} is missing: apt-get install systemd-boot-efi`);
  }
}

/** A small but real UKI to sign: the stub itself stands in for the kernel PE. */
function uki(): Uint8Array {
  return buildUki({
    stub: stub(),
    kernel: Buffer.concat([stub(), Buffer.alloc(5001, 1)]),
    initrd: new Uint8Array(3333).fill(2),
    cmdline: 'console=ttyS0',
    osRelease: 'ID=ossify\n',
    uname: '6.1.0-test',
  });
}

function needSbsigntool(): void {
  requireTool('sbsign', 'sbsigntool');
  requireTool('sbverify', 'sbsigntool');
}

beforeAll(async () => {
  requireTool('openssl', 'openssl');
  keys = await generateSecureBootKeys(join(dir, 'keys'), { commonName: 'ossify test' });
});

describe('Secure Boot keys', () => {
  it('openssl makes self-signed RSA-2048 PK, KEK and db with the names asked for', () => {
    for (const k of ['PK', 'KEK', 'db'] as const) {
      const text = runOk('openssl', ['x509', '-in', keys[k].cert, '-noout', '-subject', '-text']);
      expect(text).toContain(`CN = ossify test ${k}`);
      expect(text).toMatch(/Public-Key: \(2048 bit\)/);
      expect(text).toMatch(/sha256WithRSAEncryption/);
      expect(readFileSync(keys[k].certDer)[0]).toBe(0x30);
    }
  });

  it('refuses to overwrite an existing key and odd subject names', async () => {
    await expect(generateKeyPair(join(dir, 'keys'), 'PK', 'again')).rejects.toThrow(/already exists/);
    await expect(generateKeyPair(join(dir, 'keys2'), 'X', 'a/CN=b')).rejects.toThrow(/common name/);
  });

  it('rejects a key that does not match its certificate', () => {
    expect(() => loadSigner(readFileSync(keys.PK.key, 'utf8'), readFileSync(keys.db.cert))).toThrow(/does not belong/);
  });
});

describe('Authenticode', () => {
  it('sbsign backend: sbverify --cert db.crt accepts, the KEK certificate does not', async () => {
    needSbsigntool();
    const path = tmp('uki.efi');
    writeFileSync(path, uki());
    const out = await signPe(path, { key: keys.db.key, cert: keys.db.cert, output: tmp('uki.signed.efi') });
    expect(await verifyPe(out, keys.db.cert)).toBe(true);
    expect(await verifyPe(out, keys.KEK.cert)).toBe(false);
    expect(await verifyPe(path, keys.db.cert)).toBe(false); // unsigned
  });

  it('our image hash equals the one sbsign signs', async () => {
    needSbsigntool();
    const image = uki();
    const path = tmp('uki.efi');
    writeFileSync(path, image);
    const signed = readFileSync(await signPe(path, { key: keys.db.key, cert: keys.db.cert, output: tmp('signed.efi') }));
    // sbsign's SpcIndirectDataContent → DigestInfo → OCTET STRING holds its image hash.
    const [sig] = readPeSignatures(signed);
    const sd = children(children(readTlv(sig!.data, 0))[1]!)[0]!;
    const idc = children(children(children(sd)[2]!)[1]!)[0]!;
    const digest = children(children(idc)[1]!)[1]!.content;
    expect(Buffer.from(digest).toString('hex')).toBe(authenticodeDigest(image).toString('hex'));
    expect(authenticodeDigest(signed).equals(authenticodeDigest(image))).toBe(true);
    // …and the CheckSum sbsign writes is the one we compute.
    const h = parsePe(signed);
    expect(peChecksum(signed, h.offsets.checkSum)).toBe(h.checkSum);
  });

  it('pure TypeScript signer: sbverify --cert db.crt accepts it, wrong certs and tampering fail', () => {
    needSbsigntool();
    const image = uki();
    const signed = signPeImage(image, signer('db'));
    const path = tmp('ts-signed.efi');
    writeFileSync(path, signed);
    const ok = run('sbverify', ['--cert', keys.db.cert, path]);
    expect(ok.stdout + ok.stderr).toMatch(/Signature verification OK/);
    expect(ok.code).toBe(0);
    expect(run('sbverify', ['--cert', keys.KEK.cert, path]).code).not.toBe(0);

    const tampered = Buffer.from(signed);
    tampered[parsePe(signed).sections.at(-1)!.pointerToRawData + 10]! ^= 1;
    const bad = tmp('tampered.efi');
    writeFileSync(bad, tampered);
    expect(run('sbverify', ['--cert', keys.db.cert, bad]).code).not.toBe(0);

    // openssl parses the PKCS #7 and finds the signer.
    const sigFile = tmp('sig.p7');
    writeFileSync(sigFile, readPeSignatures(signed)[0]!.data);
    const printed = runOk('openssl', ['pkcs7', '-inform', 'DER', '-in', sigFile, '-print_certs', '-noout']);
    expect(printed).toContain('ossify test db');
    const h = parsePe(signed);
    expect(peChecksum(signed, h.offsets.checkSum)).toBe(h.checkSum);
  });

  it('is deterministic and refuses to sign twice', () => {
    const image = uki();
    const a = signPeImage(image, signer('db'));
    const b = signPeImage(image, signer('db'));
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(() => signPeImage(a, signer('db'))).toThrow(/already signed/);
  });

  it('signs an image whose length is not a multiple of 8 (padding is hashed, as EDK2 does)', () => {
    needSbsigntool();
    const odd = Buffer.concat([Buffer.from(uki()), Buffer.from([1, 2, 3])]);
    const path = tmp('odd.efi');
    writeFileSync(path, signPeImage(odd, signer('db')));
    expect(run('sbverify', ['--cert', keys.db.cert, path]).code).toBe(0);
  });
});

describe('EFI signature lists and authenticated variables', () => {
  it('an EFI_SIGNATURE_LIST is byte-identical to sbsiglist’s', () => {
    requireTool('sbsiglist', 'sbsigntool');
    const out = tmp('db.esl');
    runOk('sbsiglist', ['--owner', OWNER.toLowerCase(), '--type', 'x509', '--output', out, keys.db.certDer]);
    expect(Buffer.from(efiSignatureList([readFileSync(keys.db.certDer)], OWNER)).equals(readFileSync(out))).toBe(true);
    expect(Buffer.from(efiSignatureList([readFileSync(keys.db.cert, 'utf8')], OWNER)).equals(readFileSync(out))).toBe(true);
  });

  it('a .auth file has sbvarsign’s layout and a PKCS #7 signature openssl verifies over the spec’s payload', () => {
    requireTool('sbvarsign', 'sbsigntool');
    const esl = efiSignatureList([readFileSync(keys.db.certDer)], OWNER);
    const eslPath = tmp('db.esl');
    writeFileSync(eslPath, esl);
    const theirsPath = tmp('db.sbvarsign.auth');
    runOk('sbvarsign', [
      '--key', keys.KEK.key, '--cert', keys.KEK.cert,
      '--attr', 'NON_VOLATILE,BOOTSERVICE_ACCESS,RUNTIME_ACCESS,TIME_BASED_AUTHENTICATED_WRITE_ACCESS',
      '--output', theirsPath, 'db', eslPath,
    ]);
    const theirs = parseAuthVariable(readFileSync(theirsPath));
    const oursBytes = signEfiVariable({ name: 'db', vendorGuid: EFI_IMAGE_SECURITY_DATABASE_GUID, data: esl, signer: signer('KEK'), timestamp: EPOCH });
    const ours = parseAuthVariable(oursBytes);
    expect(ours.certType).toBe(theirs.certType);
    expect(ours.certType).toBe('4AAFD29D-68DF-49EE-8AA9-347D375665A7');
    expect(Buffer.from(ours.data).equals(Buffer.from(theirs.data))).toBe(true);
    expect(Buffer.from(ours.timestamp).equals(Buffer.from(efiTime(EPOCH)))).toBe(true);
    expect([...efiTime(EPOCH)]).toEqual([0xe7, 0x07, 11, 14, 22, 13, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 2023-11-14 22:13:20 UTC
    // Both carry a bare SignedData (no ContentInfo): the first element is its version INTEGER.
    expect(children(readTlv(ours.signature, 0))[0]!.tag).toBe(0x02);
    expect(children(readTlv(theirs.signature, 0))[0]!.tag).toBe(0x02);

    // Verify each against the payload UEFI defines, with openssl as the judge.
    const verify = (p: ReturnType<typeof parseAuthVariable>) => {
      const payload = Buffer.concat([
        Buffer.from('db', 'utf16le'),
        Buffer.from('cbb219d73a3d9645a3bcdad00e67656f', 'hex'),
        Buffer.from([0x27, 0, 0, 0]),
        Buffer.from(p.timestamp),
        Buffer.from(p.data),
      ]);
      const content = tmp('payload.bin');
      writeFileSync(content, payload);
      const sig = tmp('sig.p7');
      writeFileSync(sig, wrapContentInfo(p.signature));
      return run('openssl', ['smime', '-verify', '-binary', '-inform', 'DER', '-in', sig, '-content', content, '-CAfile', keys.KEK.cert, '-purpose', 'any', '-out', '/dev/null']);
    };
    const control = verify(theirs);
    expect(control.stderr).toMatch(/Verification successful/);
    const r = verify(ours);
    expect(r.stderr).toMatch(/Verification successful/);
    expect(r.code).toBe(0);
  });

  it('PK, KEK and db .auth files chain PK→PK, PK→KEK, KEK→db, deterministically', () => {
    const o = { PK: signer('PK'), KEK: signer('KEK'), db: [readFileSync(keys.db.certDer)], owner: OWNER, timestamp: EPOCH };
    const a = secureBootAuthFiles(o);
    const b = secureBootAuthFiles(o);
    for (const k of ['PK', 'KEK', 'db'] as const) expect(Buffer.from(a[k]).equals(Buffer.from(b[k]))).toBe(true);
    const signerCn = (auth: Uint8Array) => {
      const f = tmp('s.p7');
      writeFileSync(f, wrapContentInfo(parseAuthVariable(auth).signature));
      return runOk('openssl', ['pkcs7', '-inform', 'DER', '-in', f, '-print_certs', '-noout']);
    };
    expect(signerCn(a.PK)).toContain('ossify test PK');
    expect(signerCn(a.KEK)).toContain('ossify test PK');
    expect(signerCn(a.db)).toContain('ossify test KEK');
    expect(Buffer.from(parseAuthVariable(a.KEK).data).equals(Buffer.from(efiSignatureList([keys.KEK.cert].map((p) => readFileSync(p, 'utf8')), OWNER)))).toBe(true);
  });
});

describe('profile keys (boot.secureBoot)', () => {
  it('loads the keygen directory, signs with the db key by either backend, and makes deterministic enrolment files', async () => {
    needSbsigntool();
    const { loadSecureBootKeys, signWithDb, enrollmentFiles } = await import('../../builder/boot/secureboot/profile.ts');
    const set = await loadSecureBootKeys(join(dir, 'keys'));
    for (const backend of ['ossify', 'sbsign'] as const) {
      const path = tmp(`${backend}.efi`);
      writeFileSync(path, await signWithDb(uki(), set, backend));
      const r = run('sbverify', ['--cert', keys.db.cert, path]);
      expect(r.stdout + r.stderr, backend).toMatch(/Signature verification OK/);
    }
    const a = enrollmentFiles(set, 'sha256:abc', EPOCH);
    const b = enrollmentFiles(set, 'sha256:abc', EPOCH);
    for (const k of ['PK', 'KEK', 'db'] as const) expect(Buffer.from(a[k]).equals(Buffer.from(b[k]))).toBe(true);
    expect(Buffer.from(parseAuthVariable(a.db).data).equals(Buffer.from(efiSignatureList([readFileSync(keys.db.certDer)], derivedGuid('sha256:abc', 'secure-boot-owner'))))).toBe(true);
    await expect(loadSecureBootKeys(join(dir, 'no-such-keys'))).rejects.toThrow(/cannot read PK.key and PK.crt/);
  });
});
