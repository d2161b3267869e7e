import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createPublicKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { poly1305, secretboxOpen, secretboxSeal } from '../../builder/trust/secretbox.ts';
import { COSIGN_PRIVATE_PEM, decryptPrivateKeyDer, encryptPrivateKeyDer, generateKeyPair, parsePrivateKey, parsePublicKey, pemDecode, pemEncode } from '../../builder/trust/keys.ts';
import { checkPayloadClaims, encodePayload, parsePayload, signPayload, verifyPayloadSignature } from '../../builder/trust/cosign.ts';
import { IN_TOTO_PAYLOAD_TYPE, pae, signEnvelope, verifyEnvelope } from '../../builder/trust/dsse.ts';
import { addSbomToRootfs, makeSbom, packageVerificationCode, SBOM_ROOTFS_PATH } from '../../builder/trust/sbom.ts';
import { makeProvenance } from '../../builder/trust/provenance.ts';
import { compareOutputs } from '../../builder/reproducible.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { textContent } from '../../builder/tree/content.ts';
import { requireTool } from '../helpers/oracle.ts';

/** Debian's python3 with a module, as an oracle; fails with the package that provides it. */
function python(module: string, pkg: string, script: string, input: string): string {
  requireTool('/usr/bin/python3', 'python3');
  if (spawnSync('/usr/bin/python3', ['-c', `import ${module}`]).status !== 0) throw new Error(`test oracle python module ${module} is not installed: apt-get install ${pkg}`);
  const r = spawnSync('/usr/bin/python3', ['-c', script], { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`python oracle failed: ${r.stderr}`);
  return r.stdout;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('secretbox (XSalsa20-Poly1305)', () => {
  it('seals exactly like libsodium (python3-nacl), for any key, nonce and length', () => {
    const cases = fc.sample(fc.record({ key: fc.uint8Array({ minLength: 32, maxLength: 32 }), nonce: fc.uint8Array({ minLength: 24, maxLength: 24 }), msg: fc.uint8Array({ maxLength: 700 }) }), { numRuns: 60, seed: 7 });
    cases.push({ key: new Uint8Array(32), nonce: new Uint8Array(24), msg: new Uint8Array(0) }, { key: randomBytes(32), nonce: randomBytes(24), msg: randomBytes(64 * 5 + 1) });
    const want = python(
      'nacl.bindings',
      'python3-nacl',
      'import sys,json,nacl.bindings as b\nfor c in json.load(sys.stdin): print(b.crypto_secretbox(bytes.fromhex(c[2]),bytes.fromhex(c[1]),bytes.fromhex(c[0])).hex())',
      JSON.stringify(cases.map((c) => [hex(c.key), hex(c.nonce), hex(c.msg)])),
    ).trim().split('\n');
    cases.forEach((c, i) => {
      const box = secretboxSeal(c.msg, c.nonce, c.key);
      expect(hex(box)).toBe(want[i]);
      expect(hex(secretboxOpen(box, c.nonce, c.key)!)).toBe(hex(c.msg));
    });
  });

  it('refuses any altered byte and a wrong key', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.nat(), (msg, at) => {
        const key = randomBytes(32);
        const nonce = randomBytes(24);
        const box = Buffer.from(secretboxSeal(msg, nonce, key));
        box[at % box.length]! ^= 1;
        expect(secretboxOpen(box, nonce, key)).toBeUndefined();
        expect(secretboxOpen(secretboxSeal(msg, nonce, key), nonce, randomBytes(32))).toBeUndefined();
      }),
      { numRuns: 50 },
    );
  });

  it('authenticates like OpenSSL\'s Poly1305', () => {
    requireTool('openssl', 'openssl');
    const dir = mkdtempSync(join(tmpdir(), 'ossify-poly-'));
    for (const n of [0, 1, 15, 16, 17, 31, 32, 33, 1000]) {
      const key = randomBytes(32);
      const msg = randomBytes(n);
      writeFileSync(join(dir, 'm'), msg);
      const r = spawnSync('openssl', ['mac', '-macopt', `hexkey:${hex(key)}`, '-in', join(dir, 'm'), 'Poly1305'], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(hex(poly1305(key, msg))).toBe(r.stdout.trim().toLowerCase());
    }
  });
});

describe('cosign key files', () => {
  it('round-trips an encrypted P-256 key, and a signature made with it verifies with the public key', () => {
    const pair = generateKeyPair('pass');
    expect(pemDecode(pair.privatePem, 'k').type).toBe(COSIGN_PRIVATE_PEM);
    const priv = parsePrivateKey(pair.privatePem, 'pass', 'k');
    const pub = parsePublicKey(pair.publicPem, 'p');
    const payload = encodePayload({ manifestDigest: `sha256:${'a'.repeat(64)}`, dockerReference: 'r.example/x' });
    expect(verifyPayloadSignature(pub, payload, signPayload(priv, payload))).toBe(true);
  });

  it('holds go-tuf\'s JSON: scrypt N=32768 r=8 p=1, nacl/secretbox, 32-byte salt, 24-byte nonce', () => {
    const j = JSON.parse(pemDecode(generateKeyPair('x').privatePem, 'k').der.toString()) as { kdf: { name: string; params: object; salt: string }; cipher: { name: string; nonce: string }; ciphertext: string };
    expect(Object.keys(j)).toEqual(['kdf', 'cipher', 'ciphertext']);
    expect(j.kdf.name).toBe('scrypt');
    expect(j.kdf.params).toEqual({ N: 32768, r: 8, p: 1 });
    expect(Buffer.from(j.kdf.salt, 'base64')).toHaveLength(32);
    expect(j.cipher.name).toBe('nacl/secretbox');
    expect(Buffer.from(j.cipher.nonce, 'base64')).toHaveLength(24);
  });

  it('decrypts a key encrypted by an independent implementation (hashlib.scrypt + libsodium), N=65536', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const der = privateKey.export({ format: 'der', type: 'pkcs8' });
    const json = python(
      'nacl.secret',
      'python3-nacl',
      'import sys,json,os,base64,hashlib,nacl.bindings as b\nder=bytes.fromhex(sys.stdin.read().strip()); salt=os.urandom(32); nonce=os.urandom(24)\n' +
        'k=hashlib.scrypt(b"py-pass",salt=salt,n=65536,r=8,p=1,dklen=32,maxmem=1<<28)\n' +
        'e=lambda x: base64.b64encode(x).decode()\n' +
        'print(json.dumps({"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":e(salt)},"cipher":{"name":"nacl/secretbox","nonce":e(nonce)},"ciphertext":e(b.crypto_secretbox(der,nonce,k))}))',
      der.toString('hex'),
    );
    const pem = pemEncode('ENCRYPTED SIGSTORE PRIVATE KEY', Buffer.from(json.trim()));
    const key = parsePrivateKey(pem, 'py-pass', 'python key');
    expect(key.export({ format: 'der', type: 'pkcs8' }).equals(der)).toBe(true);
  });

  it('refuses a wrong passphrase, altered ciphertext, costly scrypt parameters and non-P-256 keys', () => {
    const der = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'der', type: 'pkcs8' });
    const enc = encryptPrivateKeyDer(der, 'right');
    expect(() => decryptPrivateKeyDer(enc, 'wrong', 'k')).toThrow(/wrong passphrase/);
    const j = JSON.parse(enc.toString()) as { kdf: { params: { N: number } }; ciphertext: string };
    const ct = Buffer.from(j.ciphertext, 'base64');
    ct[20]! ^= 0x80;
    expect(() => decryptPrivateKeyDer(Buffer.from(JSON.stringify({ ...j, ciphertext: ct.toString('base64') })), 'right', 'k')).toThrow(/cannot decrypt/);
    j.kdf.params.N = 1 << 22;
    expect(() => decryptPrivateKeyDer(Buffer.from(JSON.stringify(j)), 'right', 'k')).toThrow(/unsupported scrypt parameters/);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expect(() => parsePublicKey(rsa.publicKey.export({ format: 'pem', type: 'spki' }).toString(), 'rsa.pub')).toThrow(/not an ECDSA P-256 key/);
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    expect(() => parsePrivateKey(p384.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), undefined, 'p384')).toThrow(/P-256/);
  });
});

describe('simple-signing payload', () => {
  const digest = `sha256:${'b'.repeat(64)}`;

  it('is cosign\'s JSON and parses back', () => {
    const bytes = encodePayload({ manifestDigest: digest, dockerReference: 'reg.example:5000/os/default', creator: 'ossify test' });
    expect(new TextDecoder().decode(bytes)).toBe(
      `{"critical":{"identity":{"docker-reference":"reg.example:5000/os/default"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":{"creator":"ossify test"}}`,
    );
    expect(parsePayload(bytes)).toEqual({ manifestDigest: digest, dockerReference: 'reg.example:5000/os/default', creator: 'ossify test' });
    const cosignStyle = `{"critical":{"identity":{"docker-reference":"x.example/a"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":null}`;
    expect(parsePayload(new TextEncoder().encode(cosignStyle)).dockerReference).toBe('x.example/a');
  });

  it('is parsed as strictly as containers/image parses it', () => {
    const bad = [
      `{"critical":{"identity":{"docker-reference":"x.example/a"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature","extra":1},"optional":null}`,
      `{"critical":{"identity":{"docker-reference":"x.example/a"},"image":{"docker-manifest-digest":"${digest}"},"type":"atomic container signature"},"optional":null}`,
      `{"critical":{"identity":{"docker-reference":"x.example/a"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"}}`,
      `{"critical":{"identity":{},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":null}`,
      `{"critical":{"identity":{"docker-reference":"x.example/a"},"image":{"docker-manifest-digest":"${digest}"},"type":"cosign container image signature"},"optional":{"timestamp":1.5}}`,
      'not json',
    ];
    for (const b of bad) expect(() => parsePayload(new TextEncoder().encode(b)), b).toThrow();
  });

  it('binds the signature to one digest and one repository', () => {
    const p = { manifestDigest: digest, dockerReference: 'reg.example/os/default:1.0.0' };
    expect(() => checkPayloadClaims(p, { manifestDigest: digest, registry: 'reg.example', repository: 'os/default' })).not.toThrow();
    expect(() => checkPayloadClaims(p, { manifestDigest: `sha256:${'c'.repeat(64)}`, registry: 'reg.example', repository: 'os/default' })).toThrow(/signs manifest/);
    expect(() => checkPayloadClaims(p, { manifestDigest: digest, registry: 'reg.example', repository: 'os/other' })).toThrow(/names reg.example\/os\/default/);
    expect(() => checkPayloadClaims({ manifestDigest: digest, dockerReference: 'busybox' }, { manifestDigest: digest, registry: 'docker.io', repository: 'library/busybox' })).not.toThrow();
  });

  it('verifies only the exact bytes with the right key', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const payload = encodePayload({ manifestDigest: digest, dockerReference: 'r.example/x' });
    const sig = signPayload(privateKey, payload);
    // The signature is the plain ASN.1 DER ECDSA Go's ecdsa.VerifyASN1 expects.
    expect(Buffer.from(sig, 'base64')[0]).toBe(0x30);
    expect(verifyPayloadSignature(publicKey, payload, sig)).toBe(true);
    const altered = Buffer.from(payload);
    altered[altered.length - 3]! ^= 1;
    expect(verifyPayloadSignature(publicKey, altered, sig)).toBe(false);
    expect(verifyPayloadSignature(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, payload, sig)).toBe(false);
    expect(verifyPayloadSignature(publicKey, payload, 'not base64!')).toBe(false);
  });
});

describe('DSSE', () => {
  it('encodes PAE as the DSSE spec\'s example', () => {
    expect(pae('http://example.com/HelloWorld', new TextEncoder().encode('hello world')).toString()).toBe('DSSEv1 29 http://example.com/HelloWorld 11 hello world');
  });

  it('signs so that Python\'s cryptography verifies the PAE, and refuses altered envelopes', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const body = new TextEncoder().encode('{"_type":"https://in-toto.io/Statement/v1"}');
    const env = signEnvelope(privateKey, IN_TOTO_PAYLOAD_TYPE, body);
    expect(verifyEnvelope(env, publicKey, 'e').equals(body)).toBe(true);
    const ok = python(
      'cryptography',
      'python3-cryptography',
      'import sys,json,base64\nfrom cryptography.hazmat.primitives import hashes, serialization\nfrom cryptography.hazmat.primitives.asymmetric import ec\n' +
        'd=json.load(sys.stdin); e=d["env"]; key=serialization.load_pem_public_key(d["pub"].encode()); body=base64.b64decode(e["payload"]); t=e["payloadType"].encode()\n' +
        'pae=b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)\n' +
        'key.verify(base64.b64decode(e["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256())); print("ok")',
      JSON.stringify({ env, pub: createPublicKey(privateKey).export({ format: 'pem', type: 'spki' }).toString() }),
    );
    expect(ok.trim()).toBe('ok');
    expect(() => verifyEnvelope({ ...env, payloadType: 'text/plain' }, publicKey, 'e')).toThrow(/no signature/);
    expect(() => verifyEnvelope({ ...env, payload: Buffer.from('{}').toString('base64') }, publicKey, 'e')).toThrow(/no signature/);
    expect(() => verifyEnvelope(env, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey, 'e')).toThrow(/no signature/);
    // A signature over the raw body instead of the PAE is not accepted.
    const raw = { ...env, signatures: [{ keyid: '', sig: sign('sha256', body, { key: privateKey, dsaEncoding: 'der' }).toString('base64') }] };
    expect(() => verifyEnvelope(raw, publicKey, 'e')).toThrow();
  });
});

const params = { name: 'os', version: '1.0', arch: 'x86_64', profileDigest: `sha256:${'d'.repeat(64)}`, epoch: 1_700_000_000, builderVersion: '0.0.0' };

describe('SBOM', () => {
  function tree(): FileTree {
    const t = new FileTree();
    const f = (text: string) => ({ type: 'file' as const, mode: 0o644, uid: 0, gid: 0, mtime: 0, content: textContent(text) });
    t.set('bin/b', f('bee'));
    t.set('bin/a', f('ay'));
    t.set('bin/hl', { type: 'hardlink', target: 'bin/a' });
    t.set('bin/sl', { type: 'symlink', target: 'a', mode: 0o777, uid: 0, gid: 0, mtime: 0 });
    t.set('etc/é', f(''));
    return t;
  }

  it('lists every regular file (hard links too, not symlinks) with SHA-1 and SHA-256, in byte order', async () => {
    const t = tree();
    const bytes = await addSbomToRootfs(t, { ...params, sources: [{ kind: 'deb', name: 'busybox-static', version: '1:1.35.0-4+deb12u1', sha256: 'e'.repeat(64) }, { kind: 'dir', name: 'overlay' }] });
    const doc = JSON.parse(new TextDecoder().decode(bytes)) as ReturnType<typeof makeSbom>;
    expect(doc.files.map((f) => f.fileName)).toEqual(['./bin/a', './bin/b', './bin/hl', './etc/é']);
    expect(doc.files[0]!.checksums).toEqual([
      { algorithm: 'SHA1', checksumValue: spawnSync('sh', ['-c', 'printf ay | sha1sum'], { encoding: 'utf8' }).stdout.slice(0, 40) },
      { algorithm: 'SHA256', checksumValue: spawnSync('sh', ['-c', 'printf ay | sha256sum'], { encoding: 'utf8' }).stdout.slice(0, 64) },
    ]);
    const deb = doc.packages.find((p) => p.name === 'busybox-static')!;
    expect(deb.versionInfo).toBe('1:1.35.0-4+deb12u1');
    expect(deb.checksums).toEqual([{ algorithm: 'SHA256', checksumValue: 'e'.repeat(64) }]);
    expect(deb.externalRefs![0]!.referenceLocator).toBe('pkg:deb/debian/busybox-static@1%3A1.35.0-4%2Bdeb12u1');
    expect(t.get(SBOM_ROOTFS_PATH)?.type).toBe('file');
    expect(t.get('usr/share')).toMatchObject({ type: 'dir', mtime: params.epoch });
    // The SBOM in the tree does not list itself.
    expect(doc.files.some((f) => f.fileName.includes('sbom'))).toBe(false);
  });

  it('computes the package verification code as SPDX 2.3 §7.9 and sha1sum say', () => {
    const sha1s = ['ffff' + '0'.repeat(36), '0000' + '1'.repeat(36)];
    const want = spawnSync('sh', ['-c', `printf %s ${[...sha1s].sort().join('')} | sha1sum`], { encoding: 'utf8' }).stdout.slice(0, 40);
    expect(packageVerificationCode(sha1s)).toBe(want);
  });

  it('is the same bytes for the same inputs (namespace and time from profile digest and epoch)', async () => {
    const a = await addSbomToRootfs(tree(), { ...params, sources: [] });
    const b = await addSbomToRootfs(tree(), { ...params, sources: [] });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    const doc = JSON.parse(new TextDecoder().decode(a)) as ReturnType<typeof makeSbom>;
    expect(doc.creationInfo.created).toBe('2023-11-14T22:13:20Z');
    const c = await addSbomToRootfs(tree(), { ...params, epoch: params.epoch + 1, sources: [] });
    expect((JSON.parse(new TextDecoder().decode(c)) as typeof doc).documentNamespace).not.toBe(doc.documentNamespace);
  });
});

describe('provenance', () => {
  it('names every artifact, the SBOM and the installer image, and every input digest', () => {
    const s = makeProvenance({
      ...params,
      profileFile: '/somewhere/default.yaml',
      artifacts: { 'disk.raw': { sha256: '1'.repeat(64) }, 'rootfs.squashfs': { sha256: '2'.repeat(64) } },
      sbomSha256: '3'.repeat(64),
      installerDigest: `sha256:${'4'.repeat(64)}`,
      sources: [{ kind: 'deb', name: 'b', version: '1', sha256: '5'.repeat(64) }, { kind: 'dir', name: 'overlay' }],
      lock: { file: '/x/default.lock.yaml', sha256: '6'.repeat(64) },
    });
    expect(s._type).toBe('https://in-toto.io/Statement/v1');
    expect(s.predicateType).toBe('https://slsa.dev/provenance/v1');
    expect(s.subject.map((x) => [x.name, x.digest?.sha256])).toEqual([
      ['disk.raw', '1'.repeat(64)],
      ['rootfs.squashfs', '2'.repeat(64)],
      ['sbom.spdx.json', '3'.repeat(64)],
      ['installer-image', '4'.repeat(64)],
    ]);
    expect(s.predicate.buildDefinition.externalParameters).toEqual({ profile: { name: 'default.yaml', digest: { sha256: 'd'.repeat(64) } }, lockfile: { name: 'default.lock.yaml', digest: { sha256: '6'.repeat(64) } }, sourceDateEpoch: params.epoch });
    expect(s.predicate.buildDefinition.resolvedDependencies[0]).toEqual({ name: 'b', uri: 'pkg:deb/debian/b@1', digest: { sha256: '5'.repeat(64) }, annotations: { kind: 'deb', version: '1' } });
    expect(s.predicate.runDetails.builder.id).toBe('pkg:npm/ossify@0.0.0');
    expect(JSON.stringify(s)).not.toContain('/somewhere');
  });
});

describe('comparing two build outputs', () => {
  function output(root: string, files: Record<string, string | Buffer>): string {
    for (const [p, c] of Object.entries(files)) {
      mkdirSync(join(root, p, '..'), { recursive: true });
      writeFileSync(join(root, p), c);
    }
    return root;
  }

  it('finds nothing in identical outputs, and ignores only build.json timings', async () => {
    const base = mkdtempSync(join(tmpdir(), 'ossify-cmp-'));
    const files = { 'rootfs.squashfs': randomBytes(100_000), 'oci/index.json': '{}', 'build.json': '{"a":1,"timings":{"x":1}}' };
    const a = output(join(base, 'a'), files);
    const b = output(join(base, 'b'), { ...files, 'build.json': '{"a":1,"timings":{"x":2}}' });
    expect(await compareOutputs(a, b)).toEqual([]);
  });

  it('names the first differing artifact and byte, and files on one side only', async () => {
    const base = mkdtempSync(join(tmpdir(), 'ossify-cmp-'));
    const big = randomBytes((9 << 20) + 5);
    const changed = Buffer.from(big);
    changed[(8 << 20) + 3]! ^= 1;
    const a = output(join(base, 'a'), { 'disk.raw': big, 'rootfs.squashfs': 'same', 'oci/blobs/sha256/x': 'x', 'build.json': '{"a":1}' });
    const b = output(join(base, 'b'), { 'disk.raw': changed, 'rootfs.squashfs': 'same', 'oci/blobs/sha256/y': 'y', 'build.json': '{"a":2}' });
    const d = await compareOutputs(a, b);
    expect(d[0]).toMatchObject({ path: 'disk.raw', offset: (8 << 20) + 3 });
    expect(d.map((x) => [x.path, x.detail.split(' ').slice(0, 3).join(' ')])).toEqual([
      ['disk.raw', 'differs at byte'],
      ['build.json', 'differs at byte'],
      ['oci/blobs/sha256/x', 'only in the'],
      ['oci/blobs/sha256/y', 'only in the'],
    ]);
  });

  it('names the rootfs file behind an SBOM difference, and a size difference at the shorter end', async () => {
    const base = mkdtempSync(join(tmpdir(), 'ossify-cmp-'));
    const sbom = (v: string) => JSON.stringify({ files: [{ fileName: './a', checksums: [{ algorithm: 'SHA1', checksumValue: '1' }] }, { fileName: './etc/t', checksums: [{ algorithm: 'SHA1', checksumValue: v }] }] });
    const a = output(join(base, 'a'), { 'sbom.spdx.json': sbom('x'), vmlinuz: 'abc' });
    const b = output(join(base, 'b'), { 'sbom.spdx.json': sbom('y'), vmlinuz: 'abcd' });
    const d = await compareOutputs(a, b);
    expect(d[0]!.detail).toContain('rootfs file ./etc/t has different contents');
    expect(d[1]).toMatchObject({ path: 'vmlinuz', offset: 3 });
  });
});
