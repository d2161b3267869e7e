import { encodeJson } from '../oci/layout.ts';
import { ANNOTATION, MT, type Descriptor, type ImageManifest } from '../oci/media-types.ts';
import { parseReference, repoName } from '../oci/reference.ts';
import { RegistryClient, RegistryError, bytesBlobSource, fileBlobSource, type RegistryClientOptions } from '../oci/registry.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { sha256Hex } from '../util/hash.ts';
import { CACHE_FORMAT } from './key.ts';
import { recordBlobs, type StageCache, type StageRecord } from './store.ts';

/**
 * The stage cache in a registry (`--cache-from REPO`, `--cache-to REPO`): each stage record is
 * an OCI artifact tagged `stage-<key>` in REPO, its config the record itself and its layers
 * the record's blobs. CI runners on different machines share work through the registry they
 * push images to; a blob several records (or images) share is stored once by the registry,
 * and every byte fetched is verified against its digest before a build uses it.
 */

export const STAGE_ARTIFACT_TYPE = 'application/vnd.dev.ossify.stage.v1';
export const STAGE_RECORD_MEDIA_TYPE = 'application/vnd.dev.ossify.stage.record.v1+json';
export const STAGE_BLOB_MEDIA_TYPE = 'application/vnd.dev.ossify.stage.blob.v1';
export const STAGE_ANNOTATION = 'dev.ossify.stage';

/** Blobs moved at once: a disk's record names a few hundred small chunks. */
const CONCURRENCY = 8;

async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: { err: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !failed) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (err) {
        failed ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw failed.err;
}

export function stageTag(key: string): string {
  return `stage-${key}`;
}

export interface RemotePushReport {
  /** Records pushed now. */
  pushed: number;
  /** Records the registry already had. */
  skipped: number;
  /** Blob bytes uploaded. */
  bytes: number;
}

export class RemoteStageCache {
  /** Tags known to exist and blobs known to be in the repository (this process). */
  private readonly tags = new Set<string>();
  private readonly blobs = new Set<string>();
  private readonly fetching = new Map<string, Promise<void>>();

  private constructor(
    readonly client: RegistryClient,
    readonly registry: string,
    readonly repository: string,
  ) {}

  static async open(repo: string, opts: RegistryClientOptions = {}): Promise<RemoteStageCache> {
    const ref = parseReference(repo);
    if (ref.tag !== undefined || ref.digest !== undefined) {
      throw new InputError(`cache repository ${repo} names a tag or digest`, { hint: 'give a repository only, e.g. registry.example/ossify/cache; stage keys become its tags' });
    }
    const client = await RegistryClient.create(ref.registry, opts);
    return new RemoteStageCache(client, ref.registry, ref.repository);
  }

  get name(): string {
    return repoName({ registry: this.registry, repository: this.repository });
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  /** The record under `key`, its blobs fetched (and verified) into the local store; undefined when the registry has none. */
  async fetch(key: string, local: StageCache): Promise<StageRecord | undefined> {
    let got: { bytes: Uint8Array; digest: string };
    try {
      got = await this.client.getManifest(this.repository, stageTag(key));
    } catch (err) {
      if (err instanceof RegistryError && err.status === 404) return undefined;
      throw err;
    }
    this.tags.add(stageTag(key));
    const manifest = JSON.parse(Buffer.from(got.bytes).toString('utf8')) as ImageManifest & { artifactType?: string };
    if (manifest.artifactType !== STAGE_ARTIFACT_TYPE || manifest.config?.mediaType !== STAGE_RECORD_MEDIA_TYPE) {
      throw new OssifyError(`${this.name}:${stageTag(key)} is not an ossify stage record`);
    }
    const record = JSON.parse(Buffer.from(await this.client.fetchBlobBytes(this.repository, manifest.config, 64 << 20)).toString('utf8')) as StageRecord;
    if (record.format !== CACHE_FORMAT || record.key !== key) throw new OssifyError(`${this.name}:${stageTag(key)} holds a record for another key or format`);
    const listed = new Map(manifest.layers.map((l) => [l.digest, l.size]));
    const blobs = [...recordBlobs(record)];
    for (const [sha, size] of blobs) {
      if (listed.get(`sha256:${sha}`) !== size) throw new OssifyError(`${this.name}:${stageTag(key)}: the record names blob ${sha}, which the artifact does not carry`);
    }
    await pool(blobs, CONCURRENCY, async ([sha, size]) => {
      if (!(await local.verifyBlob(sha, size))) {
        this.blobs.add(sha);
        return;
      }
      await this.once(sha, async () => {
        await local.blobs.store(sha, this.client.fetchBlob(this.repository, { digest: `sha256:${sha}`, size }), `${this.name} blob sha256:${sha}`);
      });
      this.blobs.add(sha);
    });
    await local.put(record);
    return local.get(key);
  }

  private async once(sha: string, fn: () => Promise<void>): Promise<void> {
    const running = this.fetching.get(sha);
    if (running) return running;
    const p = fn().finally(() => this.fetching.delete(sha));
    this.fetching.set(sha, p);
    return p;
  }

  /** Pushes the records the repository lacks: blobs first (skipping those it has), then the tagged manifest. */
  async push(records: readonly StageRecord[], local: StageCache): Promise<RemotePushReport> {
    const report: RemotePushReport = { pushed: 0, skipped: 0, bytes: 0 };
    const sent0 = this.client.stats.blobBytesSent;
    for (const record of records) {
      const tag = stageTag(record.key);
      if (this.tags.has(tag) || (await this.client.statManifest(this.repository, tag))) {
        this.tags.add(tag);
        report.skipped++;
        continue;
      }
      const layers: Descriptor[] = [...recordBlobs(record)].sort(([a], [b]) => (a < b ? -1 : 1)).map(([sha, size]) => ({ mediaType: STAGE_BLOB_MEDIA_TYPE, digest: `sha256:${sha}`, size }));
      await pool(layers, CONCURRENCY, async (desc) => {
        const sha = desc.digest.slice('sha256:'.length);
        if (this.blobs.has(sha)) return;
        await this.client.pushBlob(this.repository, desc, fileBlobSource(local.blobPath(sha), desc.size));
        this.blobs.add(sha);
      });
      const recordBytes = Buffer.from(JSON.stringify(record));
      const config = { mediaType: STAGE_RECORD_MEDIA_TYPE, digest: `sha256:${sha256Hex(recordBytes)}`, size: recordBytes.length };
      await this.client.pushBlob(this.repository, config, bytesBlobSource(recordBytes));
      const manifest = {
        schemaVersion: 2,
        mediaType: MT.manifest,
        artifactType: STAGE_ARTIFACT_TYPE,
        config,
        layers,
        annotations: { [STAGE_ANNOTATION]: record.step, [ANNOTATION.title]: `ossify stage ${record.step}` },
      };
      await this.client.putManifest(this.repository, tag, encodeJson(manifest), MT.manifest);
      this.tags.add(tag);
      report.pushed++;
    }
    report.bytes = this.client.stats.blobBytesSent - sent0;
    return report;
  }
}

/** The registry caches a build reads stages from and writes them to (one when both name the same repository). */
export interface RemoteCaches {
  from?: RemoteStageCache;
  to?: RemoteStageCache;
}

/** Opens `--cache-from`/`--cache-to`; undefined when neither is given. */
export async function openRemoteCaches(repos: { from?: string; to?: string }, opts: RegistryClientOptions = {}): Promise<RemoteCaches | undefined> {
  if (repos.from === undefined && repos.to === undefined) return undefined;
  const from = repos.from !== undefined ? await RemoteStageCache.open(repos.from, opts) : undefined;
  const to = repos.to === undefined ? undefined : repos.to === repos.from ? from : await RemoteStageCache.open(repos.to, opts);
  return { ...(from ? { from } : {}), ...(to ? { to } : {}) };
}

export async function closeRemoteCaches(r: RemoteCaches | undefined): Promise<void> {
  await r?.from?.close();
  if (r?.to && r.to !== r.from) await r.to.close();
}
