import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, rmdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { readTar } from '../formats/tar.ts';
import { tempPathFor } from '../util/atomic.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { ANNOTATION, type Descriptor, type ImageIndex, type ImageManifest, MT, hostOciArch, isIndexMediaType, isManifestMediaType, platformForArch } from '../oci/media-types.ts';
import { parseReference, repoName } from '../oci/reference.ts';
import { RegistryClient, type RegistryClientOptions, type RegistryStats } from '../oci/registry.ts';
import { RELEASE_JSON } from './artifacts.ts';
import { PAYLOAD_DIR } from './installer-image.ts';
import { parseRelease, type Release } from './release-json.ts';

export interface PullOptions extends RegistryClientOptions {
  /** Architecture to pick from an index (x86_64 or amd64 style); default this machine's. */
  arch?: string;
  client?: RegistryClient;
}

export interface PullResult {
  /** The reference asked for, `registry/repository@digest`. */
  reference: string;
  /** The platform's image manifest (equal to the reference's digest unless that is an index). */
  manifestDigest: string;
  outDir: string;
  release: Release;
  files: { name: string; size: number; sha256: string }[];
  stats: RegistryStats;
}

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

function parseJson<T>(bytes: Uint8Array, what: string): T {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as T;
  } catch (err) {
    throw new OssifyError(`${what} is not valid JSON`, { cause: err });
  }
}

async function* hashing(src: AsyncIterable<Uint8Array>, h: ReturnType<typeof createHash>): AsyncGenerator<Uint8Array> {
  for await (const c of src) {
    h.update(c);
    yield c;
  }
}

/**
 * The uncompressed tar stream of a layer, whatever compression a copy between registries
 * chose; `done` settles once the compressed source was read to its end (and so verified).
 */
function layerTar(desc: Descriptor, src: AsyncIterable<Uint8Array>): { stream: AsyncIterable<Uint8Array>; done: Promise<void> } {
  if (desc.mediaType === MT.layerTar || desc.mediaType === 'application/vnd.docker.image.rootfs.diff.tar') {
    return { stream: src, done: Promise.resolve() };
  }
  if (desc.mediaType === MT.layerTarGzip || desc.mediaType === 'application/vnd.docker.image.rootfs.diff.tar.gzip') {
    const gz = createGunzip();
    const done = pipeline(Readable.from(src), gz);
    done.catch(() => {}); // awaited by the caller; errors also reach the reader through gz
    return { stream: gz as AsyncIterable<Uint8Array>, done };
  }
  throw new OssifyError(`payload layer has media type ${desc.mediaType}, which ossify cannot read`);
}

async function writeVerifiedFile(path: string, body: AsyncIterable<Uint8Array>): Promise<{ size: number; sha256: string }> {
  const h = createHash('sha256');
  let size = 0;
  const fh = await open(path, 'wx');
  try {
    for await (const c of body) {
      h.update(c);
      size += c.length;
      let done = 0;
      while (done < c.length) done += (await fh.write(c, done, c.length - done)).bytesWritten;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  return { size, sha256: h.digest('hex') };
}

/** Picks this machine's (or the asked) platform from an index. */
function selectPlatform(index: ImageIndex, arch: string | undefined, what: string): Descriptor {
  const want = arch ? (platformForArch(arch)?.architecture ?? arch) : hostOciArch();
  const cands = index.manifests.filter((m) => isManifestMediaType(m.mediaType) && m.platform?.architecture === want && (m.platform?.os ?? 'linux') === 'linux');
  if (cands.length === 0) {
    const have = index.manifests.map((m) => m.platform?.architecture).filter(Boolean).join(', ') || 'none';
    throw new InputError(`${what} has no linux/${want} image (it has: ${have})`, { hint: 'choose one with --arch' });
  }
  return cands[0]!;
}

/**
 * Fetches an installer image by digest and writes its payload files and release.json into
 * `outDir`. Every byte is checked: manifest and layer digests while streaming, then each
 * file against release.json. Files are assembled beside `outDir` and moved in only when all
 * of them verified, so `outDir` never holds a partial or unverified payload.
 */
export async function pullRelease(refStr: string, outDir: string, opts: PullOptions = {}): Promise<PullResult> {
  const ref = parseReference(refStr);
  if (ref.digest === undefined) {
    throw new InputError(`${refStr} has no digest; ossify pulls only what a digest pins`, { hint: `use ${repoName(ref)}@sha256:<digest>, as printed by ossify push` });
  }
  const client = opts.client ?? (await RegistryClient.create(ref.registry, opts));
  const reference = `${repoName(ref)}@${ref.digest}`;
  try {
    const top = await client.getManifest(ref.repository, ref.digest);
    let manifestDigest = ref.digest;
    let manifestBytes = top.bytes;
    if (isIndexMediaType(top.mediaType)) {
      const child = selectPlatform(parseJson<ImageIndex>(top.bytes, reference), opts.arch, reference);
      const m = await client.getManifest(ref.repository, child.digest);
      manifestDigest = m.digest;
      manifestBytes = m.bytes;
    } else if (!isManifestMediaType(top.mediaType)) {
      throw new OssifyError(`${reference} is a ${top.mediaType || 'document of unknown type'}, not an image`);
    }
    const manifest = parseJson<ImageManifest>(manifestBytes, `manifest ${manifestDigest}`);
    // A copy that recompressed the layers (skopeo without --preserve-digests) drops layer
    // annotations; the payload is then the last layer, and release.json still vouches for it.
    let idx = manifest.layers.findIndex((l) => l.annotations?.[ANNOTATION.ossifyLayer] === 'payload');
    if (idx < 0 && manifest.annotations?.[ANNOTATION.ossifyRelease] !== undefined) idx = manifest.layers.length - 1;
    const payload = manifest.layers[idx];
    if (!payload) throw new OssifyError(`${reference} is not an ossify installer image: no payload layer`);
    const config = parseJson<{ rootfs?: { diff_ids?: string[] } }>(await client.fetchBlobBytes(ref.repository, manifest.config), `config ${manifest.config.digest}`);
    // fleet: a site image adds a small site layer after the payload; its release.json replaces the payload's.
    const layerIdxs = [idx, ...manifest.layers.flatMap((l, i) => (i > idx && l.annotations?.[ANNOTATION.ossifyLayer] === 'site' ? [i] : []))];
    for (const i of layerIdxs) if (!config.rootfs?.diff_ids?.[i]) throw new OssifyError(`${reference}: config names no diff_id for the ${i === idx ? 'payload' : 'site'} layer`);

    const final = resolve(outDir);
    const tmp = tempPathFor(final);
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { recursive: true });
    try {
      const files = new Map<string, { size: number; sha256: string }>();
      for (const li of layerIdxs) {
        const layer = manifest.layers[li]!;
        const diffId = config.rootfs!.diff_ids![li]!;
        const what = li === idx ? 'payload' : 'site';
        const diffHash = createHash('sha256');
        let verified = false;
        const blob = (async function* () {
          yield* client.fetchBlob(ref.repository, layer);
          verified = true;
        })();
        const { stream, done } = layerTar(layer, blob);
        const tar = hashing(stream, diffHash);
        const seen = new Set<string>();
        for await (const e of readTar(tar)) {
          if (!e.path.startsWith(`${PAYLOAD_DIR}/`)) continue;
          const name = e.path.slice(PAYLOAD_DIR.length + 1);
          if (e.type === 'dir') continue;
          if (e.type !== 'file' || !SAFE_NAME.test(name)) throw new OssifyError(`${reference}: unexpected ${what} entry ${JSON.stringify(e.path)}`);
          // Within a layer a name appears once; a later layer may only replace release.json.
          if (seen.has(name) || (files.has(name) && name !== RELEASE_JSON)) throw new OssifyError(`${reference}: payload entry ${name} appears twice`);
          seen.add(name);
          if (files.has(name)) await rm(join(tmp, name));
          files.set(name, await writeVerifiedFile(join(tmp, name), e.body));
        }
        // The tar ends before the blob does (end-of-archive padding): read on, so the digest gets checked.
        for await (const _ of tar) void _;
        await done;
        if (!verified) throw new OssifyError(`${reference}: ${what} layer was not read to its end; refusing unverified files`);
        // Reaching here means fetchBlob checked the layer digest; the diff_id covers the uncompressed tar.
        if (`sha256:${diffHash.digest('hex')}` !== diffId) throw new OssifyError(`${reference}: ${what} layer content does not match its diff_id ${diffId}`);
      }

      if (!files.has(RELEASE_JSON)) throw new OssifyError(`${reference}: payload has no release.json`);
      const release = parseRelease(await readFile(join(tmp, RELEASE_JSON), 'utf8'), reference);
      for (const [name, want] of Object.entries(release.artifacts)) {
        const got = files.get(name);
        if (!got) throw new OssifyError(`${reference}: release.json lists ${name} but the payload lacks it`);
        if (got.sha256 !== want.sha256 || got.size !== want.size) throw new OssifyError(`${reference}: ${name} does not match the sha256 and size in release.json`);
      }
      for (const name of files.keys()) {
        if (name !== RELEASE_JSON && !release.artifacts[name]) throw new OssifyError(`${reference}: payload file ${name} is not listed in release.json`);
      }

      await commitDir(tmp, final, [...files.keys()].filter((n) => n !== RELEASE_JSON).sort().concat(RELEASE_JSON));
      return {
        reference,
        manifestDigest,
        outDir: final,
        release,
        files: [...files.entries()].map(([name, f]) => ({ name, ...f })).sort((a, b) => (a.name < b.name ? -1 : 1)),
        stats: { ...client.stats },
      };
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  } finally {
    if (!opts.client) await client.close();
  }
}

/** Moves verified files into place: the whole directory when `final` is new or empty, else file by file with release.json last. */
async function commitDir(tmp: string, final: string, order: string[]): Promise<void> {
  const st = await stat(final).catch(() => undefined);
  if (st && !st.isDirectory()) throw new InputError(`${final} exists and is not a directory`);
  if (!st || (await readdir(final)).length === 0) {
    if (st) await rmdir(final);
    await rename(tmp, final);
    return;
  }
  for (const name of order) await rename(join(tmp, name), join(final, name));
  await rm(tmp, { recursive: true, force: true });
}
