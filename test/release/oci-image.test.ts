import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTar } from '../../builder/formats/tar.ts';
import { assertStaticElf, buildInstallerImage, describeLayout } from '../../builder/release/installer-image.ts';
import { parseRelease } from '../../builder/release/release-json.ts';
import { blobPath, readIndex, readManifest } from '../../builder/oci/layout.ts';
import { ANNOTATION, MT } from '../../builder/oci/media-types.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';
import { makeBuildOutput, hostBusybox } from '../helpers/registry.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
let busybox: Buffer;
let root: string;

beforeAll(() => {
  requireTool('busybox', 'busybox-static');
  requireTool('umoci', 'umoci');
  requireTool('skopeo', 'skopeo');
  busybox = hostBusybox();
  assertStaticElf(busybox, '/bin/busybox'); // the host's must be busybox-static, as the brief needs
  root = mkdtempSync(join(tmpdir(), 'ossify-image-'));
});

afterAll(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('installer image', () => {
  it('is an OCI layout that umoci unpacks into busybox, the script and the payload, byte for byte', async () => {
    const b = makeBuildOutput(join(root, 'a'));
    const img = await buildInstallerImage(b.dir, { busybox, source: 'https://example.invalid/ossify', revision: 'abc123' });
    expect(img.layoutDir).toBe(join(b.dir, 'oci'));
    expect(JSON.parse(readFileSync(join(img.layoutDir, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });

    const idx = await readIndex(img.layoutDir);
    expect(idx.manifests).toHaveLength(1);
    expect(idx.manifests[0]!.digest).toBe(img.manifestDigest);
    expect(idx.manifests[0]!.platform).toEqual({ architecture: 'amd64', os: 'linux' });
    const m = await readManifest(img.layoutDir, idx.manifests[0]!);
    expect(m.mediaType).toBe(MT.manifest);
    expect(m.layers.map((l) => l.mediaType)).toEqual([MT.layerTarGzip, MT.layerTar]);
    expect(m.annotations).toMatchObject({
      [ANNOTATION.version]: '1.0.0',
      [ANNOTATION.created]: '2023-11-14T22:13:20Z',
      [ANNOTATION.title]: 'ossify-default',
      [ANNOTATION.source]: 'https://example.invalid/ossify',
      [ANNOTATION.revision]: 'abc123',
    });
    // Every blob is named by its own hash.
    for (const d of [m.config, ...m.layers]) expect(`sha256:${sha(readFileSync(blobPath(img.layoutDir, d.digest)))}`).toBe(d.digest);

    const config = JSON.parse(readFileSync(blobPath(img.layoutDir, m.config.digest), 'utf8'));
    expect(config).toMatchObject({ architecture: 'amd64', os: 'linux', created: '2023-11-14T22:13:20Z', config: { Entrypoint: ['/bin/busybox', 'sh', '/ossify/install.sh'] } });
    const gz = readFileSync(blobPath(img.layoutDir, m.layers[0]!.digest));
    expect([...gz.subarray(0, 10)]).toEqual([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3]); // no mtime, fixed OS byte
    expect(config.rootfs.diff_ids).toEqual([`sha256:${sha(gunzipSync(gz))}`, m.layers[1]!.digest]);

    // The payload layer holds the files exactly once, uncompressed, owned by root at the epoch.
    const entries: { path: string; uid: number; mtime: number }[] = [];
    const payloadTar = readFileSync(blobPath(img.layoutDir, m.layers[1]!.digest));
    for await (const e of readTar((async function* () { yield payloadTar; })())) entries.push({ path: e.path, uid: e.uid, mtime: e.mtime });
    expect(entries.map((e) => e.path)).toEqual(['ossify', 'ossify/payload', 'ossify/payload/initramfs.img', 'ossify/payload/release.json', 'ossify/payload/rootfs.squashfs', 'ossify/payload/vmlinuz']);
    expect(entries.every((e) => e.uid === 0 && e.mtime === 1_700_000_000)).toBe(true);

    const bundle = join(root, 'bundle-a');
    runOk('umoci', ['unpack', '--rootless', '--image', `${img.layoutDir}:1.0.0`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    for (const n of ['rootfs.squashfs', 'vmlinuz', 'initramfs.img']) {
      expect(Buffer.compare(readFileSync(join(rootfs, 'ossify/payload', n)), b.files[n]!), n).toBe(0);
    }
    expect(existsSync(join(rootfs, 'ossify/payload/disk.raw'))).toBe(false);
    expect(Buffer.compare(readFileSync(join(rootfs, 'bin/busybox')), busybox)).toBe(0);

    const release = parseRelease(readFileSync(join(rootfs, 'ossify/payload/release.json'), 'utf8'), 'bundle');
    expect(release).toMatchObject({ name: 'ossify-default', version: '1.0.0', arch: 'x86_64', profileDigest: b.buildJson.profileDigest, requirements: { minRootSlotSize: 1_500_000 } });
    expect(Object.keys(release.artifacts).sort()).toEqual(['initramfs.img', 'rootfs.squashfs', 'vmlinuz']);
    expect(release.artifacts['rootfs.squashfs']!.sha256).toBe(sha(b.files['rootfs.squashfs']!));

    // The entrypoint script runs under the image's own busybox and checks the payload.
    const sh = (arg: string) => run(join(rootfs, 'bin/busybox'), ['sh', join(rootfs, 'ossify/install.sh'), arg], { env: { OSSIFY_ROOT: rootfs } });
    expect(sh('release').stdout).toBe(readFileSync(join(rootfs, 'ossify/payload/release.json'), 'utf8'));
    const verify = sh('verify');
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stderr).toContain('payload verified');
    const usage = run(join(rootfs, 'bin/busybox'), ['sh', join(rootfs, 'ossify/install.sh')], { env: { OSSIFY_ROOT: rootfs } });
    expect(usage.code).toBe(0);
    expect(usage.stdout).toContain('Commands:');
    expect(usage.stdout).toContain('upgrade [--tries N]');
    expect(sh('bogus').code).toBe(2);

    // skopeo reads the layout as well.
    const inspected = JSON.parse(runOk('skopeo', ['inspect', `oci:${img.layoutDir}:1.0.0`]));
    expect(inspected.Digest).toBe(img.manifestDigest);
    expect(inspected.Architecture).toBe('amd64');
  });

  it('is the same bytes from another directory, and is not rebuilt when nothing changed', async () => {
    const b1 = makeBuildOutput(join(root, 'd1'));
    const other = join(root, 'elsewhere', 'deeper');
    cpSync(b1.dir, join(other, 'ossify-default-1.0.0'), { recursive: true });
    // Timings differ between identical builds; they must not change the image.
    const bj = JSON.parse(readFileSync(join(other, 'ossify-default-1.0.0', 'build.json'), 'utf8'));
    bj.timings = { squashfs: 999 };
    writeFileSync(join(other, 'ossify-default-1.0.0', 'build.json'), JSON.stringify(bj));
    const i1 = await buildInstallerImage(b1.dir, { busybox });
    const i2 = await buildInstallerImage(join(other, 'ossify-default-1.0.0'), { busybox, env: { SOURCE_DATE_EPOCH: '5' } });
    expect(i2.manifestDigest).toBe(i1.manifestDigest);
    expect(i1.cached).toBe(false);
    const again = await buildInstallerImage(b1.dir, { busybox });
    expect(again.cached).toBe(true);
    expect(again.manifestDigest).toBe(i1.manifestDigest);
    expect((await describeLayout(i1.layoutDir)).release).toEqual(i1.release);

    // A different epoch is a different image, and the old blobs are cleaned out of the layout.
    const i3 = await buildInstallerImage(b1.dir, { busybox, epoch: 1_800_000_000 });
    expect(i3.manifestDigest).not.toBe(i1.manifestDigest);
    const names = readdirSync(join(i3.layoutDir, 'blobs', 'sha256')).sort();
    const m = await readManifest(i3.layoutDir, i3.manifest);
    expect(names).toEqual([i3.manifestDigest, m.config.digest, ...m.layers.map((l) => l.digest)].map((d) => d.slice(7)).sort());
  });

  it('refuses a modified build output, a missing artifact and a dynamic busybox', async () => {
    const b = makeBuildOutput(join(root, 'bad'));
    const f = join(b.dir, 'vmlinuz');
    const orig = readFileSync(f);
    const changed = Buffer.from(orig);
    changed[100] = changed[100]! ^ 1;
    writeFileSync(f, changed);
    await expect(buildInstallerImage(b.dir, { busybox })).rejects.toThrow(/vmlinuz does not match the sha256/);
    expect(existsSync(join(b.dir, 'oci', 'index.json'))).toBe(false);
    writeFileSync(f, orig.subarray(1));
    await expect(buildInstallerImage(b.dir, { busybox })).rejects.toThrow(InputError);
    writeFileSync(f, orig);

    const dynamic = readFileSync(process.execPath);
    await expect(buildInstallerImage(b.dir, { busybox: dynamic })).rejects.toThrow(/dynamically linked/);
    await expect(buildInstallerImage(join(root, 'nope'), { busybox })).rejects.toThrow(/not an ossify build output/);

    const bj = JSON.parse(readFileSync(join(b.dir, 'build.json'), 'utf8'));
    delete bj.artifacts['initramfs.img'];
    writeFileSync(join(b.dir, 'build.json'), JSON.stringify(bj));
    await expect(buildInstallerImage(b.dir, { busybox })).rejects.toThrow(/initramfs\.img/);
    bj.arch = 'vax';
    writeFileSync(join(b.dir, 'build.json'), JSON.stringify(bj));
    await expect(buildInstallerImage(b.dir, { busybox })).rejects.toThrow(InputError);
  });

  it('ships verity data and the roothash when the build has them', async () => {
    const b = makeBuildOutput(join(root, 'verity'));
    const verity = Buffer.alloc(4096, 9);
    writeFileSync(join(b.dir, 'rootfs.verity'), verity);
    const bj = JSON.parse(readFileSync(join(b.dir, 'build.json'), 'utf8'));
    bj.artifacts['rootfs.verity'] = { sha256: sha(verity), size: verity.length };
    bj.verity = { roothash: 'ff'.repeat(32) };
    writeFileSync(join(b.dir, 'build.json'), JSON.stringify(bj));
    const img = await buildInstallerImage(b.dir, { busybox });
    expect(img.release.roothash).toBe('ff'.repeat(32));
    expect(img.release.requirements.minRootSlotSize).toBe(1_500_000 + 4096);
    expect(Object.keys(img.release.artifacts)).toContain('rootfs.verity');
  });
});
