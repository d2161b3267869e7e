import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Content, hostFileContent } from '../tree/content.ts';
import { InputError } from '../util/errors.ts';
import { readIndex } from '../oci/layout.ts';
import { ANNOTATION, MT } from '../oci/media-types.ts';
import { type LayoutImage, parseTarget, type PushOptions as LayoutPushOptions, type PushResult, pushTargets } from '../oci/push.ts';
import { buildDigest, loadBuildJson } from './build-json.ts';
import { buildInstallerImage, describeLayout, type InstallerImage } from './installer-image.ts';

export type { PushResult } from '../oci/push.ts';

export interface PushOptions extends LayoutPushOptions {
  /** Static busybox to build the image with; when absent an up-to-date `oci/` layout is pushed as it is. */
  busybox?: Uint8Array | Content;
  /** Where to read a static busybox when the layout must be (re)built and `busybox` is not given. */
  busyboxPath?: string;
  source?: string;
  revision?: string;
}

async function busyboxFromPath(path: string): Promise<Content> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) {
    throw new InputError(`no installer image in the build output and no busybox at ${path} to build one`, {
      hint: 'apt-get install busybox-static, or pass --busybox PATH to a static busybox',
    });
  }
  return hostFileContent(path, st.size);
}

/**
 * The installer image of a build output: the layout the build wrote when it still matches
 * build.json, else one built now (cached by its inputs, so repeating a push builds nothing).
 */
export async function ensureInstallerImage(outDir: string, opts: PushOptions = {}): Promise<InstallerImage> {
  const imageOpts = {
    ...(opts.source !== undefined ? { source: opts.source } : {}),
    ...(opts.revision !== undefined ? { revision: opts.revision } : {}),
    ...(opts.env !== undefined ? { env: opts.env } : {}),
  };
  if (opts.busybox !== undefined) return buildInstallerImage(outDir, { busybox: opts.busybox, ...imageOpts });
  if (opts.source === undefined && opts.revision === undefined) {
    const build = await loadBuildJson(outDir);
    const layoutDir = join(outDir, 'oci');
    const idx = await readIndex(layoutDir).catch(() => undefined);
    if (idx?.annotations?.[ANNOTATION.ossifyBuild] === buildDigest(build)) {
      const img = await describeLayout(layoutDir, true).catch(() => undefined);
      if (img) return img;
    }
  }
  return buildInstallerImage(outDir, { busybox: await busyboxFromPath(opts.busyboxPath ?? '/bin/busybox'), ...imageOpts });
}

function layoutItem(img: InstallerImage, outDir: string): LayoutImage {
  const { annotations: _drop, ...desc } = img.manifest;
  return { layoutDir: img.layoutDir, desc, outDir, cached: img.cached };
}

/** Builds (if needed) and pushes the installer image of one build output. */
export async function pushBuild(outDir: string, ref: string, opts: PushOptions = {}): Promise<PushResult> {
  return pushBuilds([outDir], ref, opts);
}

/** Several build outputs (one per architecture) become an image index; one becomes a plain image. */
export async function pushBuilds(outDirs: readonly string[], refStr: string, opts: PushOptions = {}): Promise<PushResult> {
  if (outDirs.length === 0) throw new InputError('nothing to push: give at least one build output directory');
  const ref = parseTarget(refStr);
  const images: InstallerImage[] = [];
  for (const d of outDirs) images.push(await ensureInstallerImage(d, opts));
  const items = images.map((img, i) => layoutItem(img, outDirs[i]!));
  if (images.length === 1) return pushTargets(ref, opts, items);

  const seen = new Map<string, string>();
  for (const [i, img] of images.entries()) {
    const key = `${img.platform.os}/${img.platform.architecture}${img.platform.variant ? `/${img.platform.variant}` : ''}`;
    if (seen.has(key)) throw new InputError(`${outDirs[i]} and ${seen.get(key)} are both ${key}; an index needs one image per platform`);
    seen.set(key, outDirs[i]!);
  }
  const names = new Set(images.map((i) => i.release.name));
  const versions = new Set(images.map((i) => i.release.version));
  const created = images.map((i) => i.release.created).sort().at(-1)!;
  return pushTargets(ref, opts, items, (manifests) => ({
    schemaVersion: 2,
    mediaType: MT.index,
    manifests,
    annotations: {
      [ANNOTATION.created]: created,
      ...(names.size === 1 ? { [ANNOTATION.title]: [...names][0]! } : {}),
      ...(versions.size === 1 ? { [ANNOTATION.version]: [...versions][0]! } : {}),
    },
  }));
}
