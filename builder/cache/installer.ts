import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { buildDigest, loadBuildJson } from '../release/build-json.ts';
import { describeLayout, type InstallerImage, type LayerBlob, type LayerCache } from '../release/installer-image.ts';
import { blobPath } from '../oci/layout.ts';
import { readContent, type Content } from '../tree/content.ts';
import { sha256Hex } from '../util/hash.ts';
import { builderIdentity, CACHE_FORMAT, stageKey } from './key.ts';
import { outputDigest, type StageRun } from './stages.ts';
import type { StageCache, StageRecord } from './store.ts';

/**
 * The installer image as a cached stage: keyed by build.json (timings aside), the busybox and
 * the epoch, stored as the files of its OCI layout. Its base and payload layers are also kept
 * on their own (LayerCache), so a site of a fleet compresses only its few-KiB site layer.
 */

export const INSTALLER_STAGE = 'installer image';
const LAYER_STAGE = 'installer layer';
const STEP_VERSION = 1;

/**
 * Layers by the key installer-image.ts gives them, kept as stage records of their own (one blob
 * each), so they travel through `--cache-to/--cache-from` like any stage: a site built on a
 * machine that never made its base still compresses nothing but its site layer.
 */
export class StageLayerCache implements LayerCache {
  constructor(
    private readonly cache: StageCache,
    private readonly run?: StageRun,
  ) {}

  private key(layerKey: string): string {
    return stageKey({ format: CACHE_FORMAT, builder: builderIdentity(), step: LAYER_STAGE, layer: layerKey });
  }

  async get(layerKey: string, layoutDir: string): Promise<LayerBlob | undefined> {
    const key = this.key(layerKey);
    const rec = (await this.cache.get(key)) ?? (await this.run?.fetchRemote(key));
    const out = rec?.files.layer;
    const layer = rec?.values.layer as LayerBlob | undefined;
    if (!rec || !out || !('sha256' in out) || !layer || `sha256:${out.sha256}` !== layer.digest) return undefined;
    await this.cache.linkOut(out.sha256, blobPath(layoutDir, layer.digest));
    this.run?.adopt(`${LAYER_STAGE} ${key.slice(0, 12)}`, rec);
    return layer;
  }

  async put(layerKey: string, layoutDir: string, layer: LayerBlob): Promise<void> {
    const stored = await this.cache.putFile(blobPath(layoutDir, layer.digest));
    if (`sha256:${stored.sha256}` !== layer.digest) return; // not what it claims: do not keep it
    const key = this.key(layerKey);
    const rec: StageRecord = { format: CACHE_FORMAT, key, step: LAYER_STAGE, output: '', files: { layer: stored }, values: { layer: { ...layer } }, sources: [] };
    rec.output = outputDigest(rec);
    await this.cache.put(rec);
    this.run?.adopt(`${LAYER_STAGE} ${key.slice(0, 12)}`, rec);
  }
}

async function listFiles(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await listFiles(root, r)));
    else if (e.isFile() && !e.name.startsWith('.ossify-tmp-')) out.push(r);
  }
  return out.sort();
}

/**
 * Restores the installer image of `work` from the cache, or makes it with `produce` (given a
 * layer cache) and stores it. Without a cache, just `produce()`.
 */
export async function cachedInstallerImage(
  run: StageRun,
  busybox: Content,
  epoch: number,
  produce: (layerCache?: LayerCache) => Promise<InstallerImage>,
): Promise<InstallerImage> {
  const cache = run.cache;
  if (!cache) {
    run.status[INSTALLER_STAGE] = 'off';
    return produce(cache ? new StageLayerCache(cache, run) : undefined);
  }
  const work = run.ctx.work;
  const key = stageKey({
    format: CACHE_FORMAT,
    builder: builderIdentity(),
    step: INSTALLER_STAGE,
    version: STEP_VERSION,
    build: buildDigest(await loadBuildJson(work)),
    busybox: sha256Hex(await readContent(busybox)),
    epoch,
  });
  const layoutDir = join(work, 'oci');
  const restore = async (record: StageRecord) => {
    for (const [name, out] of Object.entries(record.files)) {
      if (!('sha256' in out)) continue;
      // Blobs of an OCI layout are content-addressed where they land too: linked, not copied.
      if (name.startsWith('oci/blobs/')) await cache.linkOut(out.sha256, join(work, name));
      else await cache.copyOut(out.sha256, join(work, name));
    }
    run.adopt(INSTALLER_STAGE, record);
    return describeLayout(layoutDir, true);
  };
  const local = await cache.get(key);
  if (local) {
    run.status[INSTALLER_STAGE] = 'hit';
    return restore(local);
  }
  const remote = await run.fetchRemote(key);
  if (remote) {
    run.status[INSTALLER_STAGE] = 'remote';
    return restore(remote);
  }
  return cache.withLock(key, async () => {
    const again = await cache.get(key);
    if (again) {
      run.status[INSTALLER_STAGE] = 'hit';
      return restore(again);
    }
    const image = await produce(new StageLayerCache(cache, run));
    const files: StageRecord['files'] = {};
    for (const rel of await listFiles(layoutDir)) {
      const name = `oci/${rel}`;
      const path = join(work, name);
      // A layout blob is named by its digest, computed as it was written: one the store already has
      // (a site's base and payload layers) is not hashed again here; every use re-verifies it anyway.
      const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(rel);
      const size = (await stat(path)).size;
      files[name] = m && (await cache.present(m[1]!, size)) ? { sha256: m[1]!, size } : await cache.putFile(path);
    }
    const record: StageRecord = {
      format: CACHE_FORMAT,
      key,
      step: INSTALLER_STAGE,
      output: '',
      files,
      values: {},
      sources: [],
      made: { profile: run.ctx.loaded.profile.name, ...(run.ctx.loaded.profile.site ? { site: run.ctx.loaded.profile.site.name } : {}) },
    };
    record.output = outputDigest(record);
    await cache.put(record);
    run.adopt(INSTALLER_STAGE, record);
    run.status[INSTALLER_STAGE] = 'miss';
    return image;
  });
}
