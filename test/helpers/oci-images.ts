import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { MT } from '../../builder/oci/media-types.ts';
import { type RegistryClient, bytesBlobSource } from '../../builder/oci/registry.ts';

/** Small OCI images pushed with the project's registry client, for input tests. */

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

export interface TarItem {
  name: string;
  content?: string | Uint8Array;
  type?: 'file' | 'directory' | 'symlink';
  linkname?: string;
  mode?: number;
}

export async function packTar(entries: TarItem[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const e of entries) {
    const header = { name: e.name, type: e.type ?? 'file', mode: e.mode ?? (e.type === 'directory' ? 0o755 : 0o644), uid: 0, gid: 0, mtime: new Date(0), ...(e.linkname ? { linkname: e.linkname } : {}) };
    await new Promise<void>((res, rej) =>
      header.type === 'file' ? pack.entry(header, Buffer.from(e.content ?? ''), (err) => (err ? rej(err) : res())) : pack.entry(header, (err) => (err ? rej(err) : res())),
    );
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** A layer as pushed: its gzip bytes and the sha256 of the uncompressed tar (the config's diff_id). */
export interface GzLayer {
  gz: Uint8Array;
  diffId: string;
}

export function gzLayer(tar: Uint8Array): GzLayer {
  return { gz: gzipSync(tar), diffId: `sha256:${sha(tar)}` };
}

/** Pushes an image of the given layers; returns its manifest digest, size and the first layer's digest. */
export async function pushLayers(client: RegistryClient, repo: string, layers: GzLayer[], opts: { arch?: string; diffId?: string; tag?: string } = {}) {
  const descs = [];
  for (const l of layers) {
    const desc = { mediaType: MT.layerTarGzip, digest: `sha256:${sha(l.gz)}`, size: l.gz.length };
    await client.pushBlob(repo, desc, bytesBlobSource(l.gz));
    descs.push(desc);
  }
  const diffIds = opts.diffId ? [opts.diffId] : layers.map((l) => l.diffId);
  const config = Buffer.from(JSON.stringify({ architecture: opts.arch ?? 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }));
  const configDesc = { mediaType: MT.config, digest: `sha256:${sha(config)}`, size: config.length };
  await client.pushBlob(repo, configDesc, bytesBlobSource(config));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: configDesc, layers: descs }));
  const digest = await client.putManifest(repo, opts.tag ?? `sha256:${sha(manifest)}`, manifest, MT.manifest);
  return { digest, size: manifest.length, layerDigest: descs[0]!.digest };
}

/** Pushes a one-layer image of `files`. */
export async function pushImage(client: RegistryClient, repo: string, files: TarItem[], opts: { arch?: string; diffId?: string; tag?: string } = {}) {
  return pushLayers(client, repo, [gzLayer(await packTar(files))], opts);
}
