import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthError } from '../../builder/oci/auth.ts';
import { buildInstallerImage } from '../../builder/release/installer-image.ts';
import { pullRelease } from '../../builder/release/pull.ts';
import { pushBuild } from '../../builder/release/push.ts';
import { RegistryClient } from '../../builder/oci/registry.ts';
import { OssifyError } from '../../builder/util/errors.ts';
import { execa } from 'execa';
import { requireTool } from '../helpers/oracle.ts';
import { type FakeBuild, type RegistryHandle, makeBuildOutput, startRegistry, hostBusybox } from '../helpers/registry.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
let root: string;
let build: FakeBuild;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'ossify-auth-test-'));
  build = makeBuildOutput(join(root, 'out'), { rootfsSize: 600_000 });
  await buildInstallerImage(build.dir, { busybox: hostBusybox() });
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

function dockerConfig(name: string, auths: Record<string, unknown>): { env: NodeJS.ProcessEnv } {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ auths }));
  return { env: { DOCKER_CONFIG: dir } };
}

/** Async: the token server runs in this process, so a blocking spawn would deadlock it. */
async function skopeoRawSha(reg: RegistryHandle, ref: string, user?: string): Promise<string> {
  const r = await execa('skopeo', ['inspect', '--raw', ...reg.skopeoArgs('inspect', user), `docker://${ref}`], { encoding: 'buffer', reject: false, timeout: 30_000 });
  if (r.exitCode !== 0) throw new Error(`skopeo inspect failed: ${Buffer.from(r.stderr).toString()}`);
  return `sha256:${sha(r.stdout)}`;
}

describe('TLS with a private CA', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    reg = await startRegistry({ tls: true });
  });
  afterAll(async () => reg?.stop());

  it('pushes over HTTPS trusting only --ca-file, and skopeo verifies the same bytes', async () => {
    const r = await pushBuild(build.dir, `${reg.host}/tls/os:1.0.0`, { caFile: reg.caFile!, blobCache: false, credentials: null });
    expect(await skopeoRawSha(reg, r.reference)).toBe(r.digest);
    const p = await pullRelease(r.reference, join(root, 'tls-pulled'), { caFile: reg.caFile!, credentials: null });
    expect(Buffer.compare(readFileSync(join(p.outDir, 'rootfs.squashfs')), build.files['rootfs.squashfs']!)).toBe(0);
  });

  it('fails with a TLS error and a hint without the CA, and refuses plain HTTP to it', async () => {
    const err = await pushBuild(build.dir, `${reg.host}/tls/os`, { blobCache: false, credentials: null }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OssifyError);
    expect((err as OssifyError).message).toMatch(/TLS failure/);
    expect((err as OssifyError).hint).toMatch(/--ca-file/);
    // A CA file that is not a certificate is bad input.
    writeFileSync(join(root, 'junk.pem'), 'junk');
    await expect(pushBuild(build.dir, `${reg.host}/tls/os`, { caFile: join(root, 'junk.pem'), blobCache: false })).rejects.toMatchObject({ exitCode: 2 });
    const plain = await pushBuild(build.dir, `${reg.host}/tls/os`, { insecure: true, blobCache: false, credentials: null, retry: { attempts: 2, baseDelayMs: 1 } }).catch((e: unknown) => e);
    expect(plain).toBeInstanceOf(OssifyError);
  });
});

describe('htpasswd basic auth', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    requireTool('htpasswd', 'apache2-utils');
    reg = await startRegistry({ htpasswd: { alice: 'correct horse:battery' } });
  });
  afterAll(async () => reg?.stop());

  it('pushes with credentials from docker config.json (base64 auth) and skopeo sees the digest', async () => {
    const cfg = dockerConfig('cfg-basic', { [`http://${reg.host}`]: { auth: Buffer.from('alice:correct horse:battery').toString('base64') } });
    const r = await pushBuild(build.dir, `${reg.host}/basic/os:1.0.0`, { insecure: true, blobCache: false, dockerConfig: cfg, env: cfg.env });
    expect(await skopeoRawSha(reg, r.reference, 'alice')).toBe(r.digest);
    const again = await pushBuild(build.dir, `${reg.host}/basic/os:1.0.0`, { insecure: true, blobCache: false, dockerConfig: cfg });
    expect(again.stats.blobBytesSent).toBe(0);
  });

  it('fails clearly with a wrong password or none', async () => {
    const wrong = dockerConfig('cfg-wrong', { [reg.host]: { username: 'alice', password: 'nope' } });
    await expect(pushBuild(build.dir, `${reg.host}/basic/os`, { insecure: true, blobCache: false, dockerConfig: wrong })).rejects.toThrow(AuthError);
    const none = await pushBuild(build.dir, `${reg.host}/basic/os`, { insecure: true, blobCache: false, credentials: null }).catch((e: unknown) => e);
    expect(none).toBeInstanceOf(AuthError);
    expect((none as AuthError).message).toMatch(/requires a login/);
  });
});

describe('token auth', () => {
  let reg: RegistryHandle;
  beforeAll(async () => {
    // The first token is already expired: the registry refuses it and the client must fetch another.
    reg = await startRegistry({ token: { users: { bob: 's3cret' }, expiredFirst: 1 } });
  });
  afterAll(async () => reg?.stop());

  it('gets a Bearer token for the scopes, refreshes it on 401, and mounts across repositories', async () => {
    const cfg = dockerConfig('cfg-token', { [reg.host]: { username: 'bob', password: 's3cret' } });
    const client = await RegistryClient.create(reg.host, { insecure: true, dockerConfig: cfg });
    const r = await pushBuild(build.dir, `${reg.host}/tok/os:1.0.0`, { client, blobCache: false });
    expect(await skopeoRawSha(reg, r.reference, 'bob')).toBe(r.digest);
    const ts = reg.tokenServer!;
    expect(ts.requests.every((q) => q.account === 'bob')).toBe(true);
    expect(ts.requests.some((q) => q.scopes.includes('repository:tok/os:pull,push'))).toBe(true);
    // ping token + refused expired token + its replacement, at least.
    expect(client.stats.tokenRequests).toBeGreaterThanOrEqual(3);

    const before = { ...client.stats };
    const m = await pushBuild(build.dir, `${reg.host}/tok/site-7:1.0.0`, { client, blobCache: false, mountFrom: ['tok/os'] });
    expect(m.stats.blobsMounted - before.blobsMounted).toBe(3);
    expect(m.stats.blobBytesSent - before.blobBytesSent).toBe(0);
    // The mount needed pull on the source repository in the same token.
    expect(ts.requests.some((q) => q.scopes.includes('repository:tok/os:pull') && q.scopes.includes('repository:tok/site-7:pull,push'))).toBe(true);
    await client.close();

    const p = await pullRelease(m.reference, join(root, 'tok-pulled'), { insecure: true, dockerConfig: cfg });
    expect(p.manifestDigest).toBe(r.digest);
  });

  it('refuses wrong credentials and anonymous pushes with an auth error', async () => {
    const wrong = dockerConfig('cfg-token-wrong', { [reg.host]: { username: 'bob', password: 'x' } });
    await expect(pushBuild(build.dir, `${reg.host}/tok/os`, { insecure: true, blobCache: false, dockerConfig: wrong })).rejects.toThrow(/token server .* refused user bob/);
    await expect(pushBuild(build.dir, `${reg.host}/tok/os`, { insecure: true, blobCache: false, credentials: null })).rejects.toThrow(AuthError);
  });
});
