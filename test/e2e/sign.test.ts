import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROJECT_ROOT, ossify } from '../helpers/cli.ts';
import { requireTool } from '../helpers/oracle.ts';
import { type RegistryHandle, hostBusybox, makeBuildOutput, startRegistry } from '../helpers/registry.ts';
import { pushBuild } from '../../builder/release/push.ts';
import { RegistryClient } from '../../builder/oci/registry.ts';
import { MT } from '../../builder/oci/media-types.ts';
import { verifyImageSignature } from '../../builder/trust/signatures.ts';
import { OssifyError } from '../../builder/util/errors.ts';
import { encodeSbom, makeSbom, SBOM_FILE } from '../../builder/trust/sbom.ts';
import { encodeStatement, makeProvenance, PROVENANCE_FILE } from '../../builder/trust/provenance.ts';
import { sha256Hex } from '../../builder/util/hash.ts';

/**
 * Signatures against a real docker-registry (2.8: no referrers API, so the fallback tag is
 * exercised), with a sigstore-enabled skopeo as the oracle both ways: it verifies what ossify
 * signs through a `sigstoreSigned` policy, signs with an ossify-made (encrypted) key for ossify
 * to verify, and generates a key ossify signs with.
 */

// ---------------------------------------------------------------------------------------------
// The oracle: a skopeo with sigstore support. Debian bookworm's skopeo 1.9.3 is built with it
// disabled ("Debian-local change: sigstore disabled"), so, unless the skopeo on PATH has it,
// Debian trixie's skopeo (1.18) is fetched with apt-get download from a private package list
// (nothing on the system changes) and run with trixie's own glibc through its dynamic loader.
// Cached under out/cache/oracles, so it is fetched once per machine.

const ORACLE_DIR = join(PROJECT_ROOT, 'out', 'cache', 'oracles', 'skopeo-trixie');
const TRIXIE_PACKAGES = ['skopeo', 'libc6', 'libgpgme11t64', 'libassuan9', 'libgpg-error0', 'libsqlite3-0'];

/** skopeo >= 1.10 has generate-sigstore-key; older ones print their general help for an unknown command. */
function hasSigstore(cmd: string[]): boolean {
  const r = spawnSync(cmd[0]!, [...cmd.slice(1), 'generate-sigstore-key', '--help'], { encoding: 'utf8' });
  return r.status === 0 && /Generate a sigstore public\/private key pair/.test(r.stdout);
}

function trixieSkopeo(): string[] {
  const lib = join(ORACLE_DIR, 'root', 'usr', 'lib', 'x86_64-linux-gnu');
  return [join(lib, 'ld-linux-x86-64.so.2'), '--library-path', lib, join(ORACLE_DIR, 'root', 'usr', 'bin', 'skopeo')];
}

function provisionSigstoreSkopeo(): string[] {
  requireTool('skopeo', 'skopeo');
  if (hasSigstore(['skopeo'])) return ['skopeo'];
  const cmd = trixieSkopeo();
  if (existsSync(cmd[3]!) && hasSigstore(cmd)) return cmd;
  requireTool('apt-get', 'apt');
  requireTool('dpkg-deb', 'dpkg');
  const hint =
    'test oracle skopeo with sigstore support is not installed: Debian bookworm\'s skopeo 1.9.3 has sigstore disabled, and fetching Debian trixie\'s skopeo failed; ' +
    `install a sigstore-enabled skopeo (>= 1.10) on PATH, or make deb.debian.org reachable for apt-get (it is fetched into ${ORACLE_DIR})`;
  rmSync(ORACLE_DIR, { recursive: true, force: true });
  for (const d of ['lists/partial', 'archives/partial', 'debs', 'root']) mkdirSync(join(ORACLE_DIR, d), { recursive: true });
  writeFileSync(join(ORACLE_DIR, 'sources.list'), 'deb http://deb.debian.org/debian trixie main\n');
  const apt = ['-o', `Dir::Etc::sourcelist=${join(ORACLE_DIR, 'sources.list')}`, '-o', 'Dir::Etc::sourceparts=/nonexistent', '-o', `Dir::State::Lists=${join(ORACLE_DIR, 'lists')}`, '-o', `Dir::Cache=${ORACLE_DIR}`, '-o', 'APT::Sandbox::User=root'];
  const up = spawnSync('apt-get', [...apt, '-qq', 'update'], { encoding: 'utf8' });
  const dl = up.status === 0 ? spawnSync('apt-get', [...apt, '-qq', 'download', ...TRIXIE_PACKAGES], { cwd: join(ORACLE_DIR, 'debs'), encoding: 'utf8' }) : up;
  if (dl.status !== 0) throw new Error(`${hint}\n${dl.stderr}`);
  for (const deb of readdirSync(join(ORACLE_DIR, 'debs'))) {
    const x = spawnSync('dpkg-deb', ['-x', join(ORACLE_DIR, 'debs', deb), join(ORACLE_DIR, 'root')], { encoding: 'utf8' });
    if (x.status !== 0) throw new Error(`${hint}\n${x.stderr}`);
  }
  if (!hasSigstore(cmd)) throw new Error(hint);
  return cmd;
}

let skopeoCmd: string[];
const skopeo = (args: string[]) => execa(skopeoCmd[0]!, [...skopeoCmd.slice(1), ...args], { reject: false });

let registry: RegistryHandle;
let work: string;
let repo: string;
let digest: string;
let ref: string;
let client: RegistryClient;
const PASSPHRASE = 'correct horse battery staple';

function passFile(): string {
  const p = join(work, 'passphrase');
  writeFileSync(p, `${PASSPHRASE}\n`);
  return p;
}

/** skopeo configuration that reads and writes sigstore attachments and requires `pub` for `repoName`. */
function skopeoConfig(name: string, repoName: string, pub: string | undefined): string[] {
  const dir = join(work, `skopeo-${name}`);
  mkdirSync(join(dir, 'registries.d'), { recursive: true });
  writeFileSync(join(dir, 'registries.d', 'default.yaml'), `docker:\n  ${registry.host}:\n    use-sigstore-attachments: true\n`);
  const accept = [{ type: 'insecureAcceptAnything' }];
  const requirement = pub ? [{ type: 'sigstoreSigned', keyPath: pub, signedIdentity: { type: 'matchRepository' } }] : accept;
  // Everything else is accepted, so a refusal can only come from the requirement under test.
  writeFileSync(join(dir, 'policy.json'), JSON.stringify({ default: accept, transports: { docker: { '': accept, [repoName]: requirement }, dir: { '': accept } } }));
  return ['--policy', join(dir, 'policy.json'), '--registries.d', join(dir, 'registries.d')];
}

async function skopeoPull(config: string[], source: string) {
  const dest = mkdtempSync(join(work, 'pulled-'));
  return skopeo([...config, 'copy', '--src-tls-verify=false', `docker://${source}`, `dir:${dest}`]);
}

async function keygen(prefix: string) {
  const r = await ossify(['keygen', '--output-key-prefix', join(work, prefix), '--passphrase-file', passFile()]);
  expect(r.exitCode, r.stderr).toBe(0);
  return { key: join(work, `${prefix}.key`), pub: join(work, `${prefix}.pub`) };
}

async function pushFake(name: string, seed: number): Promise<string> {
  const out = mkdtempSync(join(work, 'build-'));
  const fake = makeBuildOutput(out, { seed, rootfsSize: 100_000 });
  const r = await pushBuild(fake.dir, `${registry.host}/ossify/${name}:1.0.0`, { busybox: hostBusybox(), insecure: true, blobCache: false });
  return r.digest;
}

let keys: { key: string; pub: string };
let other: { key: string; pub: string };

beforeAll(async () => {
  skopeoCmd = provisionSigstoreSkopeo();
  registry = await startRegistry();
  work = mkdtempSync(join(tmpdir(), 'ossify-sign-'));
  repo = `${registry.host}/ossify/signed`;
  digest = await pushFake('signed', 1);
  ref = `${repo}@${digest}`;
  client = await RegistryClient.create(registry.host, { insecure: true, credentials: null });
  keys = await keygen('cosign');
  other = await keygen('other');
}, 120_000);

afterAll(async () => {
  await client?.close();
  await registry?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('ossify keygen', () => {
  it('writes an encrypted cosign private key (mode 0600) and a PEM public key', () => {
    expect(readFileSync(keys.key, 'utf8')).toMatch(/^-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n/);
    expect(readFileSync(keys.pub, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
    expect(statSync(keys.key).mode & 0o777).toBe(0o600);
  });

  it('refuses to overwrite a key pair without --force', async () => {
    const r = await ossify(['keygen', '--output-key-prefix', join(work, 'cosign'), '--passphrase-file', passFile()]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('exists');
  });
});

describe('ossify sign', () => {
  it('stores a signature that skopeo verifies with a sigstoreSigned policy', async () => {
    const unsignedFirst = await skopeoPull(skopeoConfig('before', repo, keys.pub), ref);
    expect(unsignedFirst.exitCode, 'skopeo accepted an unsigned image').not.toBe(0);

    const r = await ossify(['sign', ref, '--key', keys.key, '--passphrase-file', passFile(), '--insecure']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`signed: ${ref}`);

    const ok = await skopeoPull(skopeoConfig('good', repo, keys.pub), ref);
    expect(ok.exitCode, ok.stderr).toBe(0);
    const wrong = await skopeoPull(skopeoConfig('wrong', repo, other.pub), ref);
    expect(wrong.exitCode).not.toBe(0);
    expect(wrong.stderr).toMatch(/signature/i);
  }, 60_000);

  it('stores it under the sha256-<digest>.sig tag once, however often it signs', async () => {
    const again = await ossify(['sign', ref, '--key', keys.key, '--insecure'], { env: { COSIGN_PASSWORD: PASSPHRASE } });
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout).toContain('already signed');
    const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${repo}:${digest.replace(':', '-')}.sig`]);
    const m = JSON.parse(raw.stdout) as { layers: { mediaType: string; annotations: Record<string, string> }[] };
    expect(m.layers).toHaveLength(1);
    expect(m.layers[0]!.mediaType).toBe('application/vnd.dev.cosign.simplesigning.v1+json');
    expect(m.layers[0]!.annotations['dev.cosignproject.cosign/signature']).toMatch(/^[A-Za-z0-9+/]+=*$/);
  }, 60_000);

  it('signs with a key skopeo generated (ENCRYPTED SIGSTORE PRIVATE KEY), and skopeo verifies it', async () => {
    const prefix = join(work, 'skopeo-made');
    const g = await skopeo(['generate-sigstore-key', '--output-prefix', prefix, '--passphrase-file', passFile()]);
    expect(g.exitCode, g.stderr).toBe(0);
    expect(readFileSync(`${prefix}.private`, 'utf8')).toMatch(/^-----BEGIN ENCRYPTED (SIGSTORE|COSIGN) PRIVATE KEY-----/);
    const other = await pushFake('skopeokey', 11);
    const target = `${registry.host}/ossify/skopeokey@${other}`;
    const r = await ossify(['sign', target, '--key', `${prefix}.private`, '--passphrase-file', passFile(), '--insecure']);
    expect(r.exitCode, r.stderr).toBe(0);
    const ok = await skopeoPull(skopeoConfig('skopeo-made', `${registry.host}/ossify/skopeokey`, `${prefix}.pub`), target);
    expect(ok.exitCode, ok.stderr).toBe(0);
  }, 60_000);

  it('refuses a wrong passphrase and a tag reference', async () => {
    const bad = await ossify(['sign', ref, '--key', keys.key, '--insecure'], { env: { COSIGN_PASSWORD: 'nope' } });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('wrong passphrase');
    const tagged = await ossify(['sign', `${repo}:1.0.0`, '--key', keys.key, '--insecure'], { env: { COSIGN_PASSWORD: PASSPHRASE } });
    expect(tagged.exitCode).toBe(2);
    expect(tagged.stderr).toContain('does not name a digest');
  });
});

describe('ossify verify', () => {
  it('accepts the signed image and refuses a wrong key', async () => {
    const ok = await ossify(['verify', ref, '--key', keys.pub, '--insecure']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('1 valid signature');
    const wrong = await ossify(['verify', ref, '--key', other.pub, '--insecure']);
    expect(wrong.exitCode).toBe(1);
    expect(wrong.stderr).toContain('not made by');
  });

  it('verifies a signature skopeo made with an ossify-made encrypted key', async () => {
    const target = `${registry.host}/ossify/byskopeo:1.0.0`;
    const config = skopeoConfig('signer', `${registry.host}/ossify/byskopeo`, undefined);
    const s = await skopeo([...config, 'copy', '--src-tls-verify=false', '--dest-tls-verify=false', '--sign-by-sigstore-private-key', other.key, '--sign-passphrase-file', passFile(), `docker://${ref}`, `docker://${target}`]);
    expect(s.exitCode, s.stderr).toBe(0);
    const byDigest = `${registry.host}/ossify/byskopeo@${digest}`;
    const ok = await ossify(['verify', byDigest, '--key', other.pub, '--insecure']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('1 valid signature');
    const wrong = await ossify(['verify', byDigest, '--key', keys.pub, '--insecure']);
    expect(wrong.exitCode).toBe(1);
  }, 60_000);

  it('refuses a tampered manifest even when the original signature is copied onto it', async () => {
    const original = await client.getManifest('ossify/signed', digest);
    const m = JSON.parse(Buffer.from(original.bytes).toString('utf8')) as { annotations: Record<string, string> };
    m.annotations['org.opencontainers.image.version'] = '6.6.6';
    const tampered = Buffer.from(JSON.stringify(m));
    const tamperedDigest = `sha256:${sha256Hex(tampered)}`;
    await client.putManifest('ossify/signed', tamperedDigest, tampered, MT.manifest);
    const sig = await client.getManifest('ossify/signed', `${digest.replace(':', '-')}.sig`);
    await client.putManifest('ossify/signed', `${tamperedDigest.replace(':', '-')}.sig`, sig.bytes, MT.manifest);

    const r = await ossify(['verify', `${repo}@${tamperedDigest}`, '--key', keys.pub, '--insecure']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`signs manifest ${digest}`);
    const sk = await skopeoPull(skopeoConfig('tampered', repo, keys.pub), `${repo}@${tamperedDigest}`);
    expect(sk.exitCode, 'skopeo accepted the tampered manifest').not.toBe(0);
  }, 60_000);

  it('refuses an unsigned image, and so does verifyImageSignature', async () => {
    const unsigned = await pushFake('unsigned', 7);
    const r = await ossify(['verify', `${registry.host}/ossify/unsigned@${unsigned}`, '--key', keys.pub, '--insecure']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('is not signed');
    const pem = readFileSync(keys.pub, 'utf8');
    await expect(verifyImageSignature({ insecure: true, credentials: null }, `${registry.host}/ossify/unsigned@${unsigned}`, pem)).rejects.toBeInstanceOf(OssifyError);
    await expect(verifyImageSignature(client, ref, readFileSync(other.pub, 'utf8'))).rejects.toThrow(/no valid signature/);
    await expect(verifyImageSignature(client, ref, pem)).resolves.toBeUndefined();
  }, 60_000);
});

describe('attestations', () => {
  it('attaches the SBOM and the signed provenance as referrers through the fallback tag', async () => {
    const out = mkdtempSync(join(work, 'attest-'));
    const fake = makeBuildOutput(out, { seed: 3, rootfsSize: 50_000 });
    const pushed = await pushBuild(fake.dir, `${registry.host}/ossify/attested:1.0.0`, { busybox: hostBusybox(), insecure: true, blobCache: false });
    const sbom = encodeSbom(
      makeSbom({ name: 'ossify-default', version: '1.0.0', arch: 'x86_64', profileDigest: String(fake.buildJson.profileDigest), epoch: 1_700_000_000, builderVersion: 'test', sources: [{ kind: 'deb', name: 'busybox-static', version: '1:1.35.0-4', sha256: 'a'.repeat(64) }] }, [
        { path: 'bin/busybox', sha1: 'b'.repeat(40), sha256: 'c'.repeat(64) },
      ]),
    );
    writeFileSync(join(fake.dir, SBOM_FILE), sbom);
    const statement = makeProvenance({
      name: 'ossify-default',
      version: '1.0.0',
      arch: 'x86_64',
      profileDigest: String(fake.buildJson.profileDigest),
      profileFile: 'default.yaml',
      epoch: 1_700_000_000,
      artifacts: fake.buildJson.artifacts as Record<string, { sha256: string }>,
      sbomSha256: sha256Hex(sbom),
      installerDigest: pushed.digest,
      sources: [],
      builderVersion: 'test',
    });
    writeFileSync(join(fake.dir, PROVENANCE_FILE), encodeStatement(statement));

    const before = await ossify(['verify', pushed.reference, '--key', keys.pub, '--insecure', '--attestations']);
    expect(before.exitCode).toBe(1);

    const s = await ossify(['sign', pushed.reference, '--key', keys.key, '--insecure', '--build', fake.dir], { env: { COSIGN_PASSWORD: PASSPHRASE } });
    expect(s.exitCode, s.stderr).toBe(0);

    const fallback = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/ossify/attested:${pushed.digest.replace(':', '-')}`]);
    const index = JSON.parse(fallback.stdout) as { mediaType: string; manifests: { artifactType: string }[] };
    expect(index.mediaType).toBe(MT.index);
    expect(index.manifests.map((d) => d.artifactType).sort()).toEqual(['application/spdx+json', 'application/vnd.dsse.envelope.v1+json']);

    const v = await ossify(['verify', pushed.reference, '--key', keys.pub, '--insecure', '--attestations']);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stdout).toContain('provenance (https://slsa.dev/provenance/v1)');
    const wrong = await ossify(['verify', pushed.reference, '--key', other.pub, '--insecure', '--attestations']);
    expect(wrong.exitCode).toBe(1);

    // A build output of another image is refused rather than attested.
    const mismatch = await ossify(['sign', ref, '--key', keys.key, '--insecure', '--build', fake.dir], { env: { COSIGN_PASSWORD: PASSPHRASE } });
    expect(mismatch.exitCode).toBe(2);
    expect(mismatch.stderr).toContain('is the build of installer image');
  }, 120_000);
});

describe('install and upgrade --require-signature', () => {
  it('refuses an unsigned image and one signed by another key before writing the disk', async () => {
    const unsigned = await pushFake('unsigned-install', 11);
    const disk = join(work, 'refused.raw');
    const r1 = await ossify(['install', '--image', `${registry.host}/ossify/unsigned-install@${unsigned}`, '--disk', disk, '--size', '1G', '--insecure', '--require-signature', keys.pub]);
    expect(r1.exitCode).toBe(1);
    expect(r1.stderr).toContain('is not signed');
    expect(existsSync(disk)).toBe(false);
    // `ref` is signed in the tests above, but by `keys`, not by `other`.
    const sig = await ossify(['sign', ref, '--key', keys.key, '--passphrase-file', passFile(), '--insecure']);
    expect(sig.exitCode, sig.stderr).toBe(0);
    const r2 = await ossify(['upgrade', '--image', ref, '--disk', disk, '--insecure', '--require-signature', other.pub]);
    expect(r2.exitCode).toBe(1);
    expect(r2.stderr).toMatch(/no valid signature/);
    const r3 = await ossify(['install', '--from', work, '--disk', disk, '--require-signature', keys.pub]);
    expect(r3.exitCode).toBe(2);
    expect(existsSync(disk)).toBe(false);
  }, 120_000);
});
