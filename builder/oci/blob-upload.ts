import { OssifyError } from '../util/errors.ts';
import { AuthError, pullScope, pushScope } from './auth.ts';
import type { BlobSource } from './blob-source.ts';
import type { Descriptor } from './media-types.ts';
import { assertDigest } from './reference.ts';
import { DigestMismatchError, RegistryError, isRetryable } from './registry-errors.ts';
import type { ProgressEvent, RegistryStats, RetryPolicy } from './registry.ts';
import type { HttpRequest, HttpResponse, StreamBody } from './transport.ts';

/** What an upload needs of the registry client: its authenticated, retried requests and its counters. */
export interface UploadClient {
  readonly registry: string;
  readonly stats: RegistryStats;
  readonly policy: RetryPolicy;
  /** Bytes per PATCH of a chunked upload; blobs up to this size go in one PUT. */
  readonly chunkSize: number;
  url(path: string): string;
  send(req: HttpRequest, scopes: readonly string[]): Promise<HttpResponse>;
  retrying<T>(what: string, fn: () => Promise<T>): Promise<T>;
  pause(what: string, attempt: number, err: unknown): Promise<void>;
  errorText(res: HttpResponse): Promise<string>;
  fail(res: HttpResponse, what: string): Promise<never>;
  statBlob(repo: string, digest: string, scopes: readonly string[]): Promise<number | undefined>;
  emit(e: ProgressEvent): void;
}

type BlobDesc = Pick<Descriptor, 'digest' | 'size'>;

/** The upload session is gone or in an unknown state; only a new upload can continue. */
class UploadLost extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

/** The end of a `Range: 0-N` upload status, as the next offset to send. */
function nextOffsetFromRange(range: string | undefined, expected?: number): number {
  const m = /^(?:bytes=)?0-(\d+)$/.exec((range ?? '').trim());
  if (!m) return 0;
  const end = Number(m[1]);
  // Registries report an empty upload as "0-0", the same as a one-byte one: what we just sent decides.
  if (end === 0) return expected === 1 ? 1 : 0;
  return end + 1;
}

function withDigest(location: string, digest: string): string {
  return `${location}${location.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`;
}

/**
 * Makes `repo` hold the blob: nothing if it already does, a cross-repository mount when
 * another repository of this registry has it, else an upload that survives broken
 * connections by resuming where the registry says it stands.
 */
export async function pushBlob(c: UploadClient, repo: string, desc: BlobDesc, source: BlobSource, mountFrom: readonly string[]): Promise<{ how: 'exists' | 'mounted' | 'uploaded'; from?: string }> {
  assertDigest(desc.digest);
  if (source.size !== desc.size) throw new OssifyError(`blob ${desc.digest}: source has ${source.size} bytes, descriptor says ${desc.size}`);
  const sources = mountFrom.filter((r) => r !== repo);
  const scopes = [pushScope(repo), ...sources.map(pullScope)];
  if ((await c.statBlob(repo, desc.digest, scopes)) === desc.size) {
    c.stats.blobsSkipped++;
    c.emit({ type: 'blob-done', op: 'push', repo, digest: desc.digest, size: desc.size, how: 'exists' });
    return { how: 'exists' };
  }
  const up = new BlobUpload(c, repo, desc, source);
  let session: string | undefined;
  let uploadScopes = scopes;
  for (const from of sources) {
    try {
      const r = await c.retrying(`mount ${desc.digest}`, () => up.start(scopes, from));
      if (r.mounted) {
        c.stats.blobsMounted++;
        c.emit({ type: 'blob-done', op: 'push', repo, digest: desc.digest, size: desc.size, how: 'mounted', from });
        return { how: 'mounted', from };
      }
      session = r.location;
    } catch (err) {
      // No pull right on the source repository: upload instead, as if it had no such blob.
      if (!(err instanceof AuthError)) throw err;
      uploadScopes = [pushScope(repo)];
    }
    break;
  }
  c.emit({ type: 'blob-start', op: 'push', repo, digest: desc.digest, size: desc.size });
  await up.run(uploadScopes, session);
  c.stats.blobsUploaded++;
  c.emit({ type: 'blob-done', op: 'push', repo, digest: desc.digest, size: desc.size, how: 'uploaded' });
  return { how: 'uploaded' };
}

/** One blob's upload: monolithic or chunked, resumed after broken connections, restarted when the session is lost. */
class BlobUpload {
  constructor(
    private readonly c: UploadClient,
    private readonly repo: string,
    private readonly desc: BlobDesc,
    private readonly source: BlobSource,
  ) {}

  /** Opens an upload session, or mounts the blob from repository `from` when the registry has it there. */
  async start(scopes: readonly string[], from?: string): Promise<{ mounted: boolean; location: string }> {
    const { c, repo, desc } = this;
    const q = from !== undefined ? `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}` : '';
    const res = await c.send({ method: 'POST', url: c.url(`${repo}/blobs/uploads/${q}`), body: new Uint8Array(0) }, scopes);
    await res.discard();
    if (res.status === 201 && from !== undefined) {
      const got = res.header('docker-content-digest');
      if (got !== undefined && got !== desc.digest) throw new DigestMismatchError(`mount of ${desc.digest} into ${repo} reported digest ${got}`);
      return { mounted: true, location: '' };
    }
    if (res.status === 202) {
      const loc = res.header('location');
      if (!loc) throw new RegistryError(`start upload in ${repo}: 202 without a Location`, 202, undefined);
      return { mounted: false, location: new URL(loc, res.url).toString() };
    }
    return c.fail(res, `start upload in ${repo}`);
  }

  async run(scopes: readonly string[], session?: string): Promise<void> {
    const { c, repo, desc } = this;
    for (let restarts = 0; ; restarts++) {
      session ??= (await c.retrying(`start upload of ${desc.digest}`, () => this.start(scopes))).location;
      try {
        if (desc.size <= c.chunkSize) await this.putMonolithic(scopes, session);
        else await this.putChunked(scopes, session);
        return;
      } catch (err) {
        if (!(err instanceof UploadLost)) throw err;
        // The blob may have landed even though we never heard so.
        if ((await c.statBlob(repo, desc.digest, scopes)) === desc.size) return;
        if (restarts >= c.policy.maxRestarts) {
          throw new OssifyError(`upload of ${desc.digest} to ${c.registry}/${repo} failed ${restarts + 1} times; last: ${err.reason}`);
        }
        c.stats.uploadRestarts++;
        await c.pause(`upload of ${desc.digest}`, restarts + 1, err);
        session = undefined;
      }
    }
  }

  private countingBody(): StreamBody {
    const { c, repo, source } = this;
    const { digest } = this.desc;
    return {
      length: source.size,
      open: () =>
        (async function* () {
          let done = 0;
          for await (const chunk of source.stream(0)) {
            c.stats.blobBytesSent += chunk.length;
            done += chunk.length;
            c.emit({ type: 'blob-progress', op: 'push', repo, digest, size: source.size, done });
            yield chunk;
          }
        })(),
    };
  }

  /** Classifies a non-success answer to an upload request. */
  private async refused(res: HttpResponse, what: string): Promise<never> {
    const text = await this.c.errorText(res);
    // Session gone (unknown, invalid state) or bytes that hashed wrong: a fresh upload may work.
    if (res.status === 404 || (res.status === 400 && /BLOB_UPLOAD_(UNKNOWN|INVALID)|DIGEST_INVALID/.test(text)) || res.status === 416) {
      throw new UploadLost(`${what}: ${res.status} ${text}`);
    }
    throw new RegistryError(`${what}: ${this.c.registry} answered ${res.status}${text ? ` (${text})` : ''}`, res.status, /^([A-Z_]+)/.exec(text)?.[1]);
  }

  private checkCreated(res: HttpResponse): void {
    const got = res.header('docker-content-digest');
    if (got !== undefined && got !== this.desc.digest) throw new DigestMismatchError(`registry stored blob ${got}, we sent ${this.desc.digest}`);
  }

  private async putMonolithic(scopes: readonly string[], session: string): Promise<void> {
    const { digest } = this.desc;
    let res: HttpResponse;
    try {
      res = await this.c.send({ method: 'PUT', url: withDigest(session, digest), headers: { 'content-type': 'application/octet-stream' }, body: this.countingBody() }, scopes);
    } catch (err) {
      // Whether the registry kept any of it is unknowable; the caller checks and starts over.
      if (isRetryable(err)) throw new UploadLost((err as Error).message);
      throw err;
    }
    if (res.status === 201) {
      await res.discard();
      return this.checkCreated(res);
    }
    return this.refused(res, `upload of ${digest}`);
  }

  private async putChunked(scopes: readonly string[], session: string): Promise<void> {
    const { c, repo, desc, source } = this;
    let location = session;
    let offset = 0;
    let failures = 0;
    let prefetch: { offset: number; data: Promise<Uint8Array> } | undefined;
    const readAt = (o: number): Promise<Uint8Array> => {
      const len = Math.min(c.chunkSize, desc.size - o);
      const data = prefetch?.offset === o ? prefetch.data : source.read(o, len);
      const next = o + len;
      // Read the next chunk from disk while this one is on the wire.
      prefetch = next < desc.size ? { offset: next, data: source.read(next, Math.min(c.chunkSize, desc.size - next)) } : undefined;
      prefetch?.data.catch(() => {});
      return data;
    };
    for (;;) {
      try {
        if (offset < desc.size) {
          const data = await readAt(offset);
          c.stats.blobBytesSent += data.length;
          const res = await c.send(
            {
              method: 'PATCH',
              url: location,
              headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + data.length - 1}` },
              body: data,
            },
            scopes,
          );
          if (res.status !== 202) return await this.refused(res, `upload of ${desc.digest} at ${offset}`);
          await res.discard();
          const loc = res.header('location');
          if (loc) location = new URL(loc, res.url).toString();
          const reported = res.header('range') !== undefined ? nextOffsetFromRange(res.header('range'), offset + data.length) : offset + data.length;
          if (reported > desc.size) throw new UploadLost(`registry reports ${reported} bytes of a ${desc.size}-byte blob`);
          offset = reported;
          failures = 0;
          c.emit({ type: 'blob-progress', op: 'push', repo, digest: desc.digest, size: desc.size, done: offset });
        } else {
          const res = await c.send({ method: 'PUT', url: withDigest(location, desc.digest), body: new Uint8Array(0) }, scopes);
          if (res.status !== 201) return await this.refused(res, `completing upload of ${desc.digest}`);
          await res.discard();
          return this.checkCreated(res);
        }
      } catch (err) {
        if (!isRetryable(err)) throw err;
        if (++failures >= c.policy.attempts) {
          throw new OssifyError(`upload of ${desc.digest} to ${c.registry}/${repo}: gave up after ${failures} failures in a row at byte ${offset}: ${(err as Error).message}`, { cause: err });
        }
        await c.pause(`upload of ${desc.digest}`, failures, err);
        // The request may have been applied even though its answer was lost: ask.
        if (offset >= desc.size && (await c.statBlob(repo, desc.digest, scopes)) === desc.size) return;
        const st = await c.retrying(`status of upload ${desc.digest}`, () => this.status(location, scopes));
        location = st.location;
        offset = st.offset;
        c.stats.uploadResumes++;
      }
    }
  }

  /** Where the registry stands in this session: its (possibly new) location and the next offset. */
  private async status(location: string, scopes: readonly string[]): Promise<{ location: string; offset: number }> {
    const res = await this.c.send({ method: 'GET', url: location }, scopes);
    if (res.status === 204 || res.status === 200 || res.status === 202) {
      await res.discard();
      const loc = res.header('location');
      return { location: loc ? new URL(loc, res.url).toString() : location, offset: nextOffsetFromRange(res.header('range')) };
    }
    return this.refused(res, 'upload status');
  }
}
