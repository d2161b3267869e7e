import { DEFAULT_ARCH } from '../arch.ts';
import { createHash } from 'node:crypto';
import type { Input } from '../profile/schema.ts';
import { FileTree } from '../tree/tree.ts';
import { OssifyError } from '../util/errors.ts';
import { applyLayer } from './apply.ts';
import { readArchive } from './archive.ts';
import { BlobCache } from './cache.ts';
import { decompressFile } from './decompress.ts';
import { ImageSource, platformText, wantedPlatform } from './oci.ts';
import type { InputKind } from './kind.ts';
import { z } from 'zod';
import { LockDigest, type OciPin } from './pins.ts';
import type { InputContext, LoadedInput } from './types.ts';

type OciSpec = Extract<Input, { oci: string }>;

export function imageSource(input: OciSpec, ctx: InputContext): ImageSource {
  return new ImageSource(
    input.oci,
    {
      arch: ctx.arch ?? DEFAULT_ARCH,
      ...(input.platform ? { platform: input.platform } : {}),
      ...(input.insecure ? { insecure: true } : {}),
      ...(input.caFile ? { caFile: input.caFile } : {}),
      ...(ctx.registry ? { client: ctx.registry } : {}),
    },
    new BlobCache(ctx.cacheDir),
  );
}

async function* hashing(src: AsyncIterable<Uint8Array>, h: ReturnType<typeof createHash>): AsyncGenerator<Uint8Array> {
  for await (const c of src) {
    h.update(c);
    yield c;
  }
}

/**
 * An OCI image's file system: its layers unpacked in order onto one tree, whiteouts and
 * opaque directories applied. Each layer's uncompressed bytes must hash to the config's
 * diff_id, so a layer that decompresses to something else than its image says is refused.
 */
export async function loadOciInput(input: OciSpec, ctx: InputContext): Promise<LoadedInput> {
  const src = imageSource(input, ctx);
  try {
    const pinned = ctx.lock?.pin(input);
    const pin = pinned && 'oci' in pinned ? pinned.oci : await src.resolve();
    const image = await src.fetch(pin);
    const diffIds = image.config.rootfs?.diff_ids;
    if (diffIds && diffIds.length !== image.layers.length) {
      throw new OssifyError(`${src.origin}: the config lists ${diffIds.length} diff_ids for ${image.layers.length} layers`);
    }
    const tree = new FileTree();
    for (const [i, layer] of image.layers.entries()) {
      const origin = `${src.origin} layer ${i + 1}/${image.layers.length} (${layer.desc.digest.slice(0, 19)})`;
      const { chunks } = await decompressFile(layer.path, origin);
      const h = createHash('sha256');
      const stream = hashing(chunks, h);
      // Xattrs the input policy strips anyway (allow.xattrs off) need not be readable: Debian's systemd puts ACLs on /var/log/journal.
      const layerTree = await readArchive(stream, origin, { binaryXattrs: input.allow?.xattrs ? 'refuse' : 'drop' });
      for await (const _ of stream) void _; // the tar may end before its padding does
      const diffId = `sha256:${h.digest('hex')}`;
      if (diffIds && diffIds[i] !== diffId) throw new OssifyError(`${origin}: uncompressed, the layer hashes to ${diffId}, but the image config says ${diffIds[i]}`);
      applyLayer(tree, layerTree, origin);
    }
    ctx.log?.(`${src.origin}: ${image.layers.length} layer(s), manifest ${pin.manifest}`);
    const { registry, repository, tag } = src.ref;
    return {
      tree,
      sources: [{ kind: 'oci', name: `${registry}/${repository}`, ...(tag ? { version: tag } : {}), sha256: pin.manifest.slice('sha256:'.length) }],
      pin: { oci: pin },
    };
  } catch (err) {
    throw src.wrap(err);
  } finally {
    await src.close();
  }
}

/** The manifest an image reference resolves to now, from the registry. */
async function resolveImage(input: OciSpec, ctx: InputContext): Promise<OciPin> {
  const src = imageSource(input, ctx);
  try {
    return await src.resolve();
  } catch (err) {
    throw src.wrap(err);
  } finally {
    await src.close();
  }
}

/** `oci:`: an image from a registry, pinned by manifest digest. */
export const ociKind: InputKind<OciSpec> = {
  origin: (input) => `oci:${input.oci}`,
  load: (input, ctx) => loadOciInput(input, ctx),
  mapPaths: (input, at, fn) => (input.caFile === undefined ? input : { ...input, caFile: fn(input.caFile, [...at, 'caFile']) }),
  lock: {
    key: (input, arch) => ({ oci: input.oci, platform: platformText(wantedPlatform({ arch, ...(input.platform ? { platform: input.platform } : {}) })) }),
    resolve: async (input, ctx) => ({ oci: await resolveImage(input, ctx) }),
    localFiles: () => [],
    mapPinPaths: (pin) => pin,
    schema: { source: z.strictObject({ oci: z.string(), platform: z.string() }), pin: z.strictObject({ manifest: LockDigest, index: LockDigest.optional() }) },
  },
  async resolution(input, _identified, ctx) {
    const pin = ctx.lock?.pin(input);
    if (pin && 'oci' in pin) return pin.oci.manifest;
    return (await resolveImage(input, { cacheDir: ctx.cacheDir, arch: ctx.arch, ...(ctx.registry ? { registry: ctx.registry } : {}) })).manifest;
  },
};
