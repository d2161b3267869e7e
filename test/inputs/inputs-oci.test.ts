import { createHash } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobCache } from '../../builder/inputs/cache.ts';
import { loadInput, type InputContext } from '../../builder/inputs/index.ts';
import { lockProfile, openLock } from '../../builder/lock/index.ts';
import { MT } from '../../builder/oci/media-types.ts';
import { RegistryClient } from '../../builder/oci/registry.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { readContent } from '../../builder/tree/content.ts';
import type { FileTree } from '../../builder/tree/tree.ts';
import { InputError } from '../../builder/util/errors.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';
import { freePort, startFaultProxy, startRegistry, type RegistryHandle } from '../helpers/registry.ts';
import { packTar, pushImage as pushTestImage, type TarItem } from '../helpers/oci-images.ts';

const DEB_CACHE = fileURLToPath(new URL('../../out/test-cache', import.meta.url));

let reg: RegistryHandle;
let work: string;
let client: RegistryClient;
/** The umoci image's manifest digest, as skopeo pushed it. */
let rootfsDigest: string;
let oracleListing: string;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function ctx(cacheDir: string, extra: Partial<InputContext> = {}): InputContext {
  return { cacheDir, registry: { retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 20 }, credentials: null }, ...extra };
}

const pushImage = (repo: string, files: TarItem[], opts: Parameters<typeof pushTestImage>[3] = {}) => pushTestImage(client, repo, files, opts);

async function fileText(tree: FileTree, path: string): Promise<string> {
  const e = tree.resolve(path);
  if (e?.type !== 'file') throw new Error(`${path} is ${e?.type ?? 'missing'}`);
  return Buffer.from(await readContent(e.content)).toString();
}

/** `tar -tv` lines reduced to type, size, name and link target (umoci's rootless unpack keeps neither owners nor all modes). */
function shape(listing: string): string[] {
  return listing
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const m = /^(.)\S+\s+\S+\s+(\d+)\s+\S+\s+\S+\s+(.*)$/.exec(line);
      if (!m) throw new Error(`unparsed: ${line}`);
      const name = m[3]!.replace(/^\.\//, '').replace(/\/$/, '');
      return `${m[1]} ${m[1] === '-' ? m[2] : 0} ${name}`;
    })
    .filter((l) => !l.endsWith(' .') && !l.endsWith(' '))
    .sort();
}

function treeShape(tree: FileTree): string[] {
  const out: string[] = [];
  for (const [p, e] of tree.walk()) {
    if (p === '') continue;
    const inode = tree.resolve(p)!;
    const t = e.type === 'hardlink' ? 'h' : ({ file: '-', dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's' } as const)[e.type];
    const size = inode.type === 'file' ? inode.content.size : 0;
    const to = e.type === 'symlink' ? ` -> ${e.target}` : e.type === 'hardlink' ? ` link to ${e.target}` : '';
    out.push(`${t} ${t === '-' ? size : 0} ${p}${to}`);
  }
  return out.sort();
}

beforeAll(async () => {
  requireTool('umoci', 'umoci');
  requireTool('skopeo', 'skopeo');
  requireTool('dpkg-deb', 'dpkg');
  work = await mkdtemp(join(tmpdir(), 'ossify-oci-input-'));
  reg = await startRegistry();
  client = await RegistryClient.create(reg.host, { insecure: true, credentials: null });

  // A three-layer image made by umoci: busybox-static's files; then deletions (whiteouts);
  // then a hand-made layer with an opaque directory, added with `umoci raw add-layer`.
  const bb = await loadInput({ deb: 'busybox-static', depends: false } as Input, { cacheDir: DEB_CACHE });
  const debFile = new BlobCache(DEB_CACHE).blobPath(bb.sources[0]!.sha256!);
  const layout = join(work, 'layout');
  const u = (args: string[]) => runOk('umoci', args, { cwd: work });
  u(['init', '--layout', layout]);
  u(['new', '--image', `${layout}:t`]);
  u(['unpack', '--rootless', '--image', `${layout}:t`, 'b1']);
  const r1 = join(work, 'b1', 'rootfs');
  runOk('dpkg-deb', ['-x', debFile, r1]);
  await mkdir(join(r1, 'etc/app'), { recursive: true });
  await mkdir(join(r1, 'opt/data/sub'), { recursive: true });
  await writeFile(join(r1, 'etc/app/conf'), 'one\n');
  await writeFile(join(r1, 'etc/app/gone'), 'gone\n');
  await writeFile(join(r1, 'opt/data/sub/f'), 'f\n');
  await writeFile(join(r1, 'opt/data/g'), 'g\n');
  await symlink('../etc/app/conf', join(r1, 'opt/link'));
  u(['repack', '--image', `${layout}:t`, 'b1']);
  u(['unpack', '--rootless', '--image', `${layout}:t`, 'b2']);
  const r2 = join(work, 'b2', 'rootfs');
  await rm(join(r2, 'etc/app/gone'));
  await rm(join(r2, 'usr/share/doc'), { recursive: true });
  await writeFile(join(r2, 'etc/app/conf'), 'two, longer\n');
  u(['repack', '--image', `${layout}:t`, 'b2']);
  const opq = join(work, 'opaque.tar');
  await writeFile(opq, await packTar([{ name: 'opt/data/', type: 'directory' }, { name: 'opt/data/.wh..wh..opq' }, { name: 'opt/data/fresh', content: 'fresh\n' }]));
  u(['raw', 'add-layer', '--image', `${layout}:t`, opq]);
  u(['unpack', '--rootless', '--image', `${layout}:t`, 'final']);
  oracleListing = runOk('tar', ['-C', join(work, 'final', 'rootfs'), '-cvvf', '/dev/null', '.']);

  const digestFile = join(work, 'digest');
  runOk('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--digestfile', digestFile, `oci:${layout}:t`, `docker://${reg.host}/rootfs:t`]);
  rootfsDigest = (await readFile(digestFile, 'utf8')).trim();
}, 300_000);

afterAll(async () => {
  await client?.close();
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('oci: inputs from a real registry', () => {
  it('applies umoci\'s layers (whiteouts, opaque directory) to the same tree umoci unpack makes', async () => {
    const cache = join(work, 'cache-a');
    const r = await loadInput({ oci: `${reg.host}/rootfs:t`, insecure: true } as Input, ctx(cache));
    expect(treeShape(r.tree)).toEqual(shape(oracleListing));
    expect(await fileText(r.tree, 'etc/app/conf')).toBe('two, longer\n');
    expect(r.tree.has('etc/app/gone')).toBe(false);
    expect(r.tree.has('usr/share/doc')).toBe(false);
    expect(r.tree.children('opt/data')).toEqual(['fresh']);
    expect(r.tree.get('opt/link')).toMatchObject({ type: 'symlink', target: '../etc/app/conf' });
    expect(r.tree.get('bin/busybox')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(r.pin).toEqual({ oci: { manifest: rootfsDigest } });
    expect(r.sources).toEqual([{ kind: 'oci', name: `${reg.host}/rootfs`, version: 't', sha256: rootfsDigest.slice(7) }]);
  });

  it('a digest reference whose blobs are cached needs no registry at all', async () => {
    const cache = join(work, 'cache-a');
    const offline = `127.0.0.1:${await freePort()}`;
    const r = await loadInput({ oci: `${offline}/rootfs@${rootfsDigest}`, insecure: true } as Input, ctx(cache));
    expect(await fileText(r.tree, 'opt/data/fresh')).toBe('fresh\n');
  });

  it('refuses a tampered cache blob, naming it', async () => {
    const cache = join(work, 'cache-tampered');
    await cp(join(work, 'cache-a'), cache, { recursive: true });
    const blobs = join(cache, 'blobs', 'sha256');
    const names = await readdir(blobs);
    let biggest = names[0]!;
    for (const n of names) if ((await readFile(join(blobs, n))).length > (await readFile(join(blobs, biggest))).length) biggest = n;
    const bytes = await readFile(join(blobs, biggest));
    bytes[100] = bytes[100]! ^ 1;
    await writeFile(join(blobs, biggest), bytes);
    const err = await loadInput({ oci: `${reg.host}/rootfs@${rootfsDigest}`, insecure: true } as Input, ctx(cache)).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(new RegExp(`oci:${reg.host}/rootfs@sha256:[0-9a-f]+: cache blob .*${biggest} is corrupt or was tampered with`));
  });

  it('refuses a registry blob whose bytes do not match its digest, and caches nothing of it', async () => {
    const proxy = await startFaultProxy({ host: '127.0.0.1', port: reg.port }, 7, { corruptBlob: 1 });
    try {
      const cache = join(work, 'cache-corrupt');
      const err = await loadInput({ oci: `${proxy.host}/rootfs:t`, insecure: true } as Input, ctx(cache)).catch((e: unknown) => e);
      expect((err as Error).message).toMatch(new RegExp(`^oci:${proxy.host}/rootfs:t: .*(hash|digest)`));
      const stored = await readdir(join(cache, 'blobs', 'sha256')).catch(() => [] as string[]);
      for (const n of stored) expect(sha(await readFile(join(cache, 'blobs', 'sha256', n)))).toBe(n);
    } finally {
      await proxy.close();
    }
  });

  it('says which input when the registry is down or the tag is unknown', async () => {
    const down = `127.0.0.1:${await freePort()}`;
    const e1 = await loadInput({ oci: `${down}/x:1`, insecure: true } as Input, ctx(join(work, 'c1'))).catch((e: unknown) => e);
    expect((e1 as Error).message).toMatch(new RegExp(`^oci:${down}/x:1: .*cannot connect`));
    const e2 = await loadInput({ oci: `${reg.host}/rootfs:nope`, insecure: true } as Input, ctx(join(work, 'c1'))).catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(InputError);
    expect((e2 as Error).message).toMatch(new RegExp(`^oci:${reg.host}/rootfs:nope: .*not found|MANIFEST_UNKNOWN`));
  });

  it('refuses a layer that writes through its own symlink or names a path outside the tree, naming input, layer and entry', async () => {
    const slip = await pushImage('evil', [{ name: 'x', type: 'symlink', linkname: '/etc' }, { name: 'x/passwd', content: 'root::0:0' }]);
    await expect(loadInput({ oci: `${reg.host}/evil@${slip.digest}`, insecure: true } as Input, ctx(join(work, 'c3')))).rejects.toThrow(
      new RegExp(`^oci:${reg.host}/evil@sha256:[0-9a-f]+ layer 1/1 \\(sha256:[0-9a-f]{12}\\): archive entry "x/passwd" lies under the symlink "x"`),
    );
    const dots = await pushImage('evil', [{ name: 'a/../../etc/shadow', content: 'x' }]);
    await expect(loadInput({ oci: `${reg.host}/evil@${dots.digest}`, insecure: true } as Input, ctx(join(work, 'c3')))).rejects.toThrow(/layer 1\/1 .*: tar entry "a\/\.\.\/\.\.\/etc\/shadow".*'\.\.'/);
  });

  it('refuses a layer whose content does not match the config\'s diff_id', async () => {
    const img = await pushImage('baddiff', [{ name: 'x', content: 'x' }], { diffId: `sha256:${'0'.repeat(64)}` });
    await expect(loadInput({ oci: `${reg.host}/baddiff@${img.digest}`, insecure: true } as Input, ctx(join(work, 'c2')))).rejects.toThrow(/layer 1\/1 .*hashes to sha256:[0-9a-f]{64}, but the image config says sha256:0+/);
  });
});

describe('oci: platforms', () => {
  let indexDigest: string;
  beforeAll(async () => {
    const amd = await pushImage('multi', [{ name: 'arch', content: 'amd64' }]);
    const arm = await pushImage('multi', [{ name: 'arch', content: 'arm64' }], { arch: 'arm64' });
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MT.index,
        manifests: [
          { mediaType: MT.manifest, digest: arm.digest, size: arm.size, platform: { os: 'linux', architecture: 'arm64' } },
          { mediaType: MT.manifest, digest: amd.digest, size: amd.size, platform: { os: 'linux', architecture: 'amd64' } },
        ],
      }),
    );
    indexDigest = await client.putManifest('multi', 'v1', index, MT.index);
  });

  it('takes the profile architecture\'s image from an index, or the one `platform` names', async () => {
    const cache = join(work, 'cache-multi');
    const amd = await loadInput({ oci: `${reg.host}/multi:v1`, insecure: true } as Input, ctx(cache, { arch: 'x86_64' }));
    expect(await fileText(amd.tree, 'arch')).toBe('amd64');
    expect(amd.pin).toMatchObject({ oci: { index: indexDigest } });
    const arm = await loadInput({ oci: `${reg.host}/multi:v1`, insecure: true, platform: 'linux/arm64' } as Input, ctx(cache));
    expect(await fileText(arm.tree, 'arch')).toBe('arm64');
  });

  it('names the platforms an index has when the wanted one is missing, and refuses a single image of another arch', async () => {
    const cache = join(work, 'cache-multi');
    await expect(loadInput({ oci: `${reg.host}/multi:v1`, insecure: true, platform: 'linux/s390x' } as Input, ctx(cache))).rejects.toThrow(
      /oci:.*multi:v1: the index sha256:[0-9a-f]+ has no linux\/s390x image \(it has: linux\/arm64, linux\/amd64\)/,
    );
    const armOnly = await pushImage('armonly', [{ name: 'a', content: 'a' }], { arch: 'arm64', tag: 'v1' });
    expect(armOnly.digest).toMatch(/^sha256:/);
    await expect(loadInput({ oci: `${reg.host}/armonly:v1`, insecure: true } as Input, ctx(cache))).rejects.toThrow(/the image is for linux\/arm64, but this build needs linux\/amd64/);
  });
});

describe('oci: lock files', () => {
  it('a locked tag keeps resolving to the locked digest after the tag moves; --frozen checks the profile', async () => {
    const dir = join(work, 'lockprof');
    await mkdir(join(dir, 'k'), { recursive: true });
    await writeFile(join(dir, 'k', 'x'), 'x');
    const first = await pushImage('moving', [{ name: 'version', content: 'first' }], { tag: 'stable' });
    const profile = (tag: string) =>
      ['name: l', 'version: "1"', 'kernel: { input: { dir: k } }', 'initramfs: { busybox: { dir: k } }', 'boot: { systemdBoot: { dir: k } }', 'rootfs:', '  inputs:', `    - { oci: "${reg.host}/moving:${tag}", insecure: true }`, ''].join('\n');
    await writeFile(join(dir, 'p.yaml'), profile('stable'));
    const loaded = await loadProfile(join(dir, 'p.yaml'), { env: {} });
    const cache = join(work, 'cache-lock');
    const locked = await lockProfile(loaded, { cacheDir: cache, registry: { credentials: null } });
    expect(locked.lock.entries).toEqual([{ source: { oci: `${reg.host}/moving:stable`, platform: 'linux/amd64' }, usedBy: ['rootfs.inputs[0]'], pin: { oci: { manifest: first.digest } } }]);
    expect(await readFile(join(dir, 'p.lock.yaml'), 'utf8')).toContain(first.digest);

    await pushImage('moving', [{ name: 'version', content: 'second' }], { tag: 'stable' });
    const pins = (await openLock(loaded, true))!;
    const r = await loadInput(loaded.profile.rootfs.inputs[0]!, ctx(cache, { lock: pins }));
    expect(await fileText(r.tree, 'version')).toBe('first');
    const fresh = await loadInput(loaded.profile.rootfs.inputs[0]!, ctx(cache));
    expect(await fileText(fresh.tree, 'version')).toBe('second');

    // Locking again keeps the pin; --update moves it.
    expect((await lockProfile(loaded, { cacheDir: cache, registry: { credentials: null } })).changed).toBe(false);
    const updated = await lockProfile(loaded, { cacheDir: cache, update: true, registry: { credentials: null } });
    expect(updated.changed).toBe(true);
    expect(updated.lock.entries[0]!.pin).not.toEqual({ oci: { manifest: first.digest } });

    await writeFile(join(dir, 'p.yaml'), profile('other'));
    const changed = await loadProfile(join(dir, 'p.yaml'), { env: {} });
    await expect(openLock(changed, true)).rejects.toThrow(/--frozen: the profile and its lock file .*p\.lock\.yaml disagree:\n {2}not in the lock: rootfs\.inputs\[0\].*moving:other[^]*locked but no longer in the profile/);
  });
});
