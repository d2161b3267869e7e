import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildInstallerImage } from '../../builder/release/installer-image.ts';
import { pullRelease } from '../../builder/release/pull.ts';
import { type PushResult, pushBuild } from '../../builder/release/push.ts';
import { DigestMismatchError, RegistryClient, type RegistryStats } from '../../builder/oci/registry.ts';
import { OssifyError } from '../../builder/util/errors.ts';
import { type FakeBuild, type RegistryHandle, makeBuildOutput, startFaultProxy, startRegistry, hostBusybox } from '../helpers/registry.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const FAST_RETRY = { attempts: 8, baseDelayMs: 2, maxDelayMs: 40, maxRestarts: 8 };
let reg: RegistryHandle;
let root: string;
let build: FakeBuild;

beforeAll(async () => {
  reg = await startRegistry();
  root = mkdtempSync(join(tmpdir(), 'ossify-faults-'));
  build = makeBuildOutput(join(root, 'out'), { rootfsSize: 2_000_000 });
  await buildInstallerImage(build.dir, { busybox: hostBusybox() });
});

afterAll(async () => {
  await reg?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

/** Straight to the registry, no proxy: what does it really hold under this name? */
async function skopeoRaw(ref: string): Promise<{ ok: boolean; bytes: Buffer; stderr: string }> {
  const r = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'buffer', reject: false, timeout: 30_000 });
  return { ok: r.exitCode === 0, bytes: Buffer.from(r.stdout), stderr: Buffer.from(r.stderr).toString() };
}

/** A tag, if present, must name a manifest whose every blob the registry holds with the right bytes. */
async function expectTagComplete(repo: string, tag: string): Promise<'absent' | 'complete'> {
  const m = await skopeoRaw(`${reg.host}/${repo}:${tag}`);
  if (!m.ok) {
    expect(m.stderr).toMatch(/manifest unknown|not found/i);
    return 'absent';
  }
  const manifest = JSON.parse(m.bytes.toString()) as { config: { digest: string; size: number }; layers: { digest: string; size: number }[] };
  const client = await RegistryClient.create(reg.host, { insecure: true, credentials: null });
  try {
    for (const d of [manifest.config, ...manifest.layers]) {
      let n = 0;
      for await (const c of client.fetchBlob(repo, d)) n += c.length; // throws on any byte that does not match
      expect(n).toBe(d.size);
    }
  } finally {
    await client.close();
  }
  return 'complete';
}

describe('push through a faulty network', () => {
  const outcomes: { seed: number; result?: PushResult; error?: unknown; faults: Record<string, number> }[] = [];

  it.each([
    [11, 'fetch'],
    [12, 'node'],
    [13, 'fetch'],
    [14, 'node'],
  ] as const)('seed %i over %s: a verified digest or a clear error, never a tag on an incomplete image', async (seed, transport) => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port }, seed, { error500: 0.07, error429: 0.07, dropUpload: 0.12, truncate: 0.08 }, 40);
    const repo = `faults/seed-${seed}`;
    let result: PushResult | undefined;
    let error: unknown;
    try {
      const client = await RegistryClient.create(proxy.host, { insecure: true, transport, credentials: null, chunkSize: 128 * 1024, retry: FAST_RETRY });
      try {
        result = await pushBuild(build.dir, `${proxy.host}/${repo}:t`, { client, blobCache: false });
      } finally {
        await client.close();
      }
    } catch (e) {
      error = e;
    } finally {
      await proxy.close();
    }
    outcomes.push({ seed, ...(result ? { result } : {}), error, faults: proxy.stats.faults });
    expect(Object.values(proxy.stats.faults).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);

    if (result) {
      const raw = await skopeoRaw(`${reg.host}/${repo}@${result.digest}`);
      expect(raw.ok, raw.stderr).toBe(true);
      expect(`sha256:${sha(raw.bytes)}`).toBe(result.digest);
      expect(await expectTagComplete(repo, 't')).toBe('complete');
      // Same image as a clean push would make.
      expect(result.digest).toBe(JSON.parse(readFileSync(join(build.dir, 'oci', 'index.json'), 'utf8')).manifests[0].digest);
    } else {
      expect(error).toBeInstanceOf(OssifyError);
      expect((error as Error).message.length).toBeGreaterThan(10);
      await expectTagComplete(repo, 't');
    }
  });

  it('recovered from the faults it met (most seeds succeed, with resumed or restarted uploads)', () => {
    const ok = outcomes.filter((o) => o.result);
    expect(ok.length).toBeGreaterThanOrEqual(3);
    const stats = ok.map((o) => o.result!.stats as RegistryStats);
    expect(stats.reduce((a, s) => a + s.retries, 0)).toBeGreaterThan(0);
    expect(stats.reduce((a, s) => a + s.uploadResumes + s.uploadRestarts, 0)).toBeGreaterThan(0);
  });

  it('a push whose retries run out is an error and leaves no tag', async () => {
    // Every upload is cut: nothing can complete.
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port }, 5, { dropUpload: 1 }, 10_000);
    try {
      const client = await RegistryClient.create(proxy.host, { insecure: true, credentials: null, chunkSize: 128 * 1024, retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 5, maxRestarts: 2 } });
      const err = await pushBuild(build.dir, `${proxy.host}/faults/hopeless:t`, { client, blobCache: false }).catch((e: unknown) => e);
      await client.close();
      expect(err).toBeInstanceOf(OssifyError);
      expect((err as Error).message).toMatch(/upload of sha256:[a-f0-9]{64} .*(gave up|failed)/);
    } finally {
      await proxy.close();
    }
    expect(await expectTagComplete('faults/hopeless', 't')).toBe('absent');
  });
});

describe('pull through a faulty network', () => {
  let ref: string;
  beforeAll(async () => {
    ref = (await pushBuild(build.dir, `${reg.host}/faults/pullme:t`, { insecure: true, blobCache: false, credentials: null })).reference;
  });

  it('resumes truncated downloads and retries 5xx/429 until every byte verifies', async () => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port }, 21, { error500: 0.15, error429: 0.1, truncate: 0.3 }, 30);
    try {
      const digest = ref.slice(ref.indexOf('@') + 1);
      const r = await pullRelease(`${proxy.host}/faults/pullme@${digest}`, join(root, 'pulled'), { insecure: true, credentials: null, retry: FAST_RETRY });
      expect(r.stats.retries).toBeGreaterThan(0);
      for (const n of ['rootfs.squashfs', 'vmlinuz', 'initramfs.img']) expect(Buffer.compare(readFileSync(join(root, 'pulled', n)), build.files[n]!), n).toBe(0);
    } finally {
      await proxy.close();
    }
  });

  it('rejects a blob whose bytes do not match its digest, and writes nothing', async () => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port }, 22, { corruptBlob: 1 });
    try {
      const digest = ref.slice(ref.indexOf('@') + 1);
      const dest = join(root, 'corrupt');
      const err = await pullRelease(`${proxy.host}/faults/pullme@${digest}`, dest, { insecure: true, credentials: null, retry: FAST_RETRY }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DigestMismatchError);
      expect((err as Error).message).toMatch(/hash to sha256:/);
      expect(existsSync(dest)).toBe(false);
      expect(readdirSync(root).filter((n) => n.startsWith('.ossify-tmp'))).toEqual([]);

      // The streaming API alone: the consumer sees an error at the end, never a clean finish.
      const client = await RegistryClient.create(proxy.host, { insecure: true, credentials: null });
      const manifest = JSON.parse((await client.getManifest('faults/pullme', digest)).bytes.toString());
      await expect(async () => {
        for await (const _ of client.fetchBlob('faults/pullme', manifest.layers[1])) void _;
      }).rejects.toThrow(DigestMismatchError);
      await client.close();
    } finally {
      await proxy.close();
    }
  });
});
