import { Command } from 'commander';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerPullCommand } from '../../builder/commands/pull.ts';
import { pushBuild, pushBuilds, registerPushCommand } from '../../builder/commands/push.ts';
import { buildInstallerImage } from '../../builder/release/installer-image.ts';
import { MT } from '../../builder/oci/media-types.ts';
import { pullRelease } from '../../builder/release/pull.ts';
import { pushLayout } from '../../builder/oci/push.ts';
import { RegistryClient } from '../../builder/oci/registry.ts';
import { InputError, OssifyError } from '../../builder/util/errors.ts';
import { runOk } from '../helpers/oracle.ts';
import { type FakeBuild, type RegistryHandle, fakeStaticElf, freePort, makeBuildOutput, startRegistry, hostBusybox } from '../helpers/registry.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
let reg: RegistryHandle;
let root: string;
let build: FakeBuild;
let busybox: Buffer;
let cacheFile: string;
const PAYLOAD = ['rootfs.squashfs', 'vmlinuz', 'initramfs.img'];

beforeAll(async () => {
  reg = await startRegistry();
  root = mkdtempSync(join(tmpdir(), 'ossify-registry-test-'));
  build = makeBuildOutput(join(root, 'out'));
  busybox = hostBusybox();
  cacheFile = join(root, 'blob-locations.json');
  await buildInstallerImage(build.dir, { busybox });
});

afterAll(async () => {
  await reg?.stop();
  if (root) rmSync(root, { recursive: true, force: true });
});

const opts = (extra: Record<string, unknown> = {}) => ({ insecure: true, blobCache: cacheFile, ...extra });

function skopeoRaw(ref: string): Buffer {
  return runOk('skopeo', ['inspect', '--raw', ...reg.skopeoArgs('inspect'), `docker://${ref}`], { encoding: 'buffer' }) as unknown as Buffer;
}

function expectPayloadViaSkopeoUmoci(ref: string, files: Record<string, Buffer>, tag = 'x'): void {
  const layout = join(root, `layout-${Math.random().toString(36).slice(2)}`);
  runOk('skopeo', ['copy', '--quiet', ...reg.skopeoArgs('src'), '--dest-oci-accept-uncompressed-layers', `docker://${ref}`, `oci:${layout}:${tag}`]);
  const bundle = `${layout}-bundle`;
  runOk('umoci', ['unpack', '--rootless', '--image', `${layout}:${tag}`, bundle]);
  for (const n of PAYLOAD) expect(Buffer.compare(readFileSync(join(bundle, 'rootfs/ossify/payload', n)), files[n]!), n).toBe(0);
}

describe('push to a plain-HTTP docker-registry', () => {
  let pushed: Awaited<ReturnType<typeof pushBuild>>;

  it('pushes by digest, then the tag; skopeo reads exactly the pushed bytes and umoci unpacks the payload', async () => {
    pushed = await pushBuild(build.dir, `${reg.host}/ossify/os:1.0.0`, opts());
    expect(pushed.reference).toMatch(new RegExp(`^${reg.host}/ossify/os@sha256:[a-f0-9]{64}$`));
    expect(pushed.tags).toEqual(['1.0.0']);
    expect(pushed.images[0]!.cached).toBe(true); // the layout from beforeAll was reused
    expect(pushed.stats.blobsUploaded).toBe(3);
    expect(pushed.stats.blobBytesSent).toBeGreaterThan(build.files['rootfs.squashfs']!.length);

    const raw = skopeoRaw(pushed.reference);
    expect(`sha256:${sha(raw)}`).toBe(pushed.digest);
    expect(JSON.parse(raw.toString()).mediaType).toBe(MT.manifest);
    expect(sha(skopeoRaw(`${reg.host}/ossify/os:1.0.0`))).toBe(sha(raw));
    expectPayloadViaSkopeoUmoci(pushed.reference, build.files);
  });

  it('uploads no blob bytes when the registry already has them', async () => {
    const again = await pushBuild(build.dir, `${reg.host}/ossify/os:1.0.0`, opts());
    expect(again.digest).toBe(pushed.digest);
    expect(again.stats.blobBytesSent).toBe(0);
    expect(again.stats.blobsSkipped).toBe(3);
    expect(again.stats.blobsUploaded).toBe(0);
  });

  it('mounts blobs into a second repository instead of uploading them', async () => {
    const second = await pushBuild(build.dir, `${reg.host}/site/store-0042:1.0.0`, opts());
    expect(second.digest).toBe(pushed.digest);
    expect(second.stats.blobsMounted).toBe(3);
    expect(second.stats.blobBytesSent).toBe(0);
    expect(`sha256:${sha(skopeoRaw(second.reference))}`).toBe(pushed.digest);
    // Without the location cache, an explicit --mount-from does the same.
    const third = await pushBuild(build.dir, `${reg.host}/site/store-0043`, opts({ blobCache: false, mountFrom: ['ossify/os'] }));
    expect(third.stats.blobsMounted).toBe(3);
    expect(third.stats.blobBytesSent).toBe(0);
    expect(third.tags).toEqual([]);
  });

  it('uploads in chunks, over either transport, to the same digest', async () => {
    for (const transport of ['fetch', 'node'] as const) {
      const client = await RegistryClient.create(reg.host, { insecure: true, transport, chunkSize: 64 * 1024, credentials: null });
      const r = await pushBuild(build.dir, `${reg.host}/chunked/${transport}:v1`, { client, blobCache: false });
      await client.close();
      expect(r.digest).toBe(pushed.digest);
      expect(r.stats.blobsUploaded).toBe(3);
      // Every blob byte exactly once: payload layer + base layer + config.
      const layout = JSON.parse(readFileSync(join(build.dir, 'oci', 'blobs', 'sha256', pushed.digest.slice(7)), 'utf8'));
      const total = layout.config.size + layout.layers.reduce((a: number, l: { size: number }) => a + l.size, 0);
      expect(r.stats.blobBytesSent).toBe(total);
      expect(r.stats.requests).toBeGreaterThan(total / (64 * 1024));
    }
  });

  it('pulls by digest, verifying every byte, into a new or an existing directory', async () => {
    const dest = join(root, 'pulled');
    const r = await pullRelease(pushed.reference, dest, { insecure: true });
    expect(r.manifestDigest).toBe(pushed.digest);
    expect(readdirSync(dest).sort()).toEqual(['initramfs.img', 'release.json', 'rootfs.squashfs', 'vmlinuz']);
    for (const n of PAYLOAD) expect(Buffer.compare(readFileSync(join(dest, n)), build.files[n]!), n).toBe(0);
    expect(r.release.artifacts['vmlinuz']!.sha256).toBe(sha(build.files.vmlinuz!));
    expect(readdirSync(root).filter((n) => n.startsWith('.ossify-tmp'))).toEqual([]);

    const existing = join(root, 'existing');
    mkdirSync(existing);
    writeFileSync(join(existing, 'keep.txt'), 'mine');
    writeFileSync(join(existing, 'vmlinuz'), 'old');
    await pullRelease(pushed.reference, existing, { insecure: true });
    expect(readFileSync(join(existing, 'keep.txt'), 'utf8')).toBe('mine');
    expect(Buffer.compare(readFileSync(join(existing, 'vmlinuz')), build.files.vmlinuz!)).toBe(0);

    await expect(pullRelease(`${reg.host}/ossify/os:1.0.0`, join(root, 'x'), { insecure: true })).rejects.toThrow(InputError);
    await expect(pullRelease(`${reg.host}/ossify/os@sha256:${'0'.repeat(64)}`, join(root, 'y'), { insecure: true })).rejects.toThrow(/not found|MANIFEST_UNKNOWN/);
    expect(existsSync(join(root, 'y'))).toBe(false);
  });

  it('pushes several architectures as an image index and pulls the one asked for', async () => {
    const arm = makeBuildOutput(join(root, 'out-arm'), { arch: 'aarch64', seed: 7, rootfsSize: 400_000 });
    // The host's busybox is x86-64: the arm image must not get it.
    await expect(pushBuilds([build.dir, arm.dir], `${reg.host}/ossify/multi:1.0.0`, opts())).rejects.toThrow(/built for x86_64, but the build is aarch64/);
    await buildInstallerImage(arm.dir, { busybox: fakeStaticElf(183) });
    const r = await pushBuilds([build.dir, arm.dir], `${reg.host}/ossify/multi:1.0.0`, opts());
    expect(r.mediaType).toBe(MT.index);
    const raw = skopeoRaw(r.reference);
    expect(`sha256:${sha(raw)}`).toBe(r.digest);
    const index = JSON.parse(raw.toString());
    expect(index.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture)).toEqual(['amd64', 'arm64']);
    expect(index.manifests[0].digest).toBe(pushed.digest);
    // skopeo resolves the index to this machine's image.
    expect(JSON.parse(runOk('skopeo', ['inspect', ...reg.skopeoArgs('inspect'), '--override-arch', 'arm64', `docker://${r.reference}`])).Architecture).toBe('arm64');

    const got = await pullRelease(r.reference, join(root, 'pulled-arm'), { insecure: true, arch: 'aarch64' });
    expect(got.release.arch).toBe('aarch64');
    expect(Buffer.compare(readFileSync(join(root, 'pulled-arm', 'rootfs.squashfs')), arm.files['rootfs.squashfs']!)).toBe(0);
    await expect(pullRelease(r.reference, join(root, 'pulled-riscv'), { insecure: true, arch: 'riscv64' })).rejects.toThrow(/no linux\/riscv64 image/);

    await expect(pushBuilds([build.dir, build.dir], `${reg.host}/ossify/dup`, opts())).rejects.toThrow(/both linux\/amd64/);
  });

  it('pushes a plain OCI layout and refuses unusable targets', async () => {
    const r = await pushLayout(join(build.dir, 'oci'), `${reg.host}/layouts/plain:v1`, opts());
    expect(r.digest).toBe(pushed.digest);
    await expect(pushBuild(build.dir, `${reg.host}/ossify/os@${pushed.digest}`, opts())).rejects.toThrow(/names a digest/);
    await expect(pushBuild(build.dir, `registry.example/ossify/os`, opts())).rejects.toThrow(/only allowed for a registry on this machine/);
    await expect(pushBuild(join(root, 'missing'), `${reg.host}/x/y`, opts())).rejects.toThrow(InputError);
    const refused = await pushBuild(build.dir, `127.0.0.1:${await freePort()}/x/y`, opts()).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(OssifyError);
    expect((refused as OssifyError).message).toMatch(/cannot connect/);
  });
});

describe('push and pull commands', () => {
  async function runCommand(register: (p: Command) => void, args: string[]): Promise<{ stdout: string; stderr: string; error?: unknown }> {
    const program = new Command('ossify').exitOverride();
    register(program);
    for (const c of program.commands) c.exitOverride();
    let stdout = '';
    let stderr = '';
    const o = vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((stdout += String(c)), true));
    const e = vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((stderr += String(c)), true));
    try {
      await program.parseAsync(['node', 'ossify', ...args]);
      return { stdout, stderr };
    } catch (error) {
      return { stdout, stderr, error };
    } finally {
      o.mockRestore();
      e.mockRestore();
    }
  }

  it('ossify push prints REPO@sha256:… (or JSON) and ossify pull writes the verified payload', async () => {
    const env = process.env.XDG_CACHE_HOME;
    process.env.XDG_CACHE_HOME = join(root, 'xdg');
    try {
      const p = await runCommand(registerPushCommand, ['push', build.dir, `${reg.host}/cli/os:v1`, '--insecure', '--chunk-size', '1']);
      expect(p.error).toBeUndefined();
      expect(p.stdout).toMatch(new RegExp(`^${reg.host}/cli/os@sha256:[a-f0-9]{64}\\n$`));
      expect(p.stderr).toMatch(/uploading|uploaded/); // plain progress lines: stderr is not a TTY here
      const ref = p.stdout.trim();

      const j = await runCommand(registerPushCommand, ['push', build.dir, `${reg.host}/cli/os:v1`, '--insecure', '--json', '--no-progress']);
      const result = JSON.parse(j.stdout);
      expect(result.reference).toBe(ref);
      expect(result.stats.blobBytesSent).toBe(0);
      expect(j.stderr).toBe('');

      const dest = join(root, 'cli-pulled');
      const q = await runCommand(registerPullCommand, ['pull', ref, '-o', dest, '--insecure', '--json', '--no-progress']);
      expect(q.error).toBeUndefined();
      expect(JSON.parse(q.stdout).files.map((f: { name: string }) => f.name)).toEqual(['initramfs.img', 'release.json', 'rootfs.squashfs', 'vmlinuz']);
      expect(Buffer.compare(readFileSync(join(dest, 'rootfs.squashfs')), build.files['rootfs.squashfs']!)).toBe(0);

      const bad = await runCommand(registerPushCommand, ['push', `${reg.host}/cli/os:v1`, '--insecure']);
      expect(bad.error).toBeInstanceOf(InputError);
      expect((bad.error as InputError).exitCode).toBe(2);
      const badChunk = await runCommand(registerPushCommand, ['push', build.dir, `${reg.host}/cli/os`, '--chunk-size', '0']);
      expect((badChunk.error as InputError).exitCode).toBe(2);
      const tagOnly = await runCommand(registerPullCommand, ['pull', `${reg.host}/cli/os:v1`, '-o', join(root, 'z'), '--insecure']);
      expect((tagOnly.error as InputError).exitCode).toBe(2);
      const down = await runCommand(registerPullCommand, ['pull', `127.0.0.1:${await freePort()}/cli/os@${result.digest}`, '-o', join(root, 'z'), '--insecure']);
      expect((down.error as OssifyError).exitCode).toBe(1);
    } finally {
      if (env === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = env;
    }
  });
});
