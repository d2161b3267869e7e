import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { InputError, OssifyError } from '../util/errors.ts';
import { AuthError, Authenticator, type Credentials, type DockerConfigOptions, RetryableStatusError, isRetryableStatus, loadDockerCredentials, pullScope, pushScope, retryAfterMs } from './auth.ts';
import type { BlobSource } from './blob-source.ts';
import { pushBlob, type UploadClient } from './blob-upload.ts';
import { type Descriptor, MANIFEST_ACCEPT } from './media-types.ts';
import { assertDigest, isLoopbackRegistry, registryApiHost } from './reference.ts';
import { DigestMismatchError, RegistryError, isRetryable } from './registry-errors.ts';
import { type HttpRequest, type HttpResponse, type Transport, TransportError, fetchTransport, nodeTransport } from './transport.ts';

export { pullScope, pushScope } from './auth.ts';
export { type BlobSource, bytesBlobSource, fileBlobSource } from './blob-source.ts';
export { DigestMismatchError, RegistryError } from './registry-errors.ts';

export interface RetryPolicy {
  /** Tries of one request, and consecutive failures of an upload without progress. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /** Times an upload may start over after the registry lost or refused its session. */
  maxRestarts: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 6, baseDelayMs: 250, maxDelayMs: 8000, maxRestarts: 4 };

export type ProgressEvent =
  | { type: 'blob-start'; op: 'push' | 'pull'; repo: string; digest: string; size: number }
  | { type: 'blob-progress'; op: 'push' | 'pull'; repo: string; digest: string; size: number; done: number }
  | { type: 'blob-done'; op: 'push' | 'pull'; repo: string; digest: string; size: number; how: 'exists' | 'mounted' | 'uploaded' | 'downloaded'; from?: string }
  | { type: 'retry'; what: string; attempt: number; error: string; delayMs: number };

export interface RegistryClientOptions {
  /** Plain HTTP; refused unless the registry is on a loopback address. */
  insecure?: boolean;
  /** PEM file of the CA that signed the registry's certificate. */
  caFile?: string;
  ca?: string | Buffer;
  /** Default: Node's fetch, or node:https when a CA is given. */
  transport?: Transport | 'fetch' | 'node';
  /** Explicit credentials; `null` for anonymous; default: docker's config.json. */
  credentials?: Credentials | null;
  dockerConfig?: DockerConfigOptions;
  retry?: Partial<RetryPolicy>;
  /** Bytes per PATCH of a chunked upload; blobs up to this size go in one PUT. */
  chunkSize?: number;
  onProgress?: (e: ProgressEvent) => void;
  userAgent?: string;
}

export interface RegistryStats {
  requests: number;
  retries: number;
  blobsUploaded: number;
  blobsSkipped: number;
  blobsMounted: number;
  /** Blob bytes handed to the network, resent bytes included. Zero when the registry had everything. */
  blobBytesSent: number;
  /** Blob and manifest bytes received. */
  bytesReceived: number;
  uploadResumes: number;
  uploadRestarts: number;
  tokenRequests: number;
}

const sha = (alg: string) => createHash(alg === 'sha512' ? 'sha512' : 'sha256');

function digestOf(bytes: Uint8Array, alg = 'sha256'): string {
  return `${alg}:${sha(alg).update(bytes).digest('hex')}`;
}

/** A client for one registry (OCI distribution spec v1.1), counting every byte it moves. */
export class RegistryClient {
  readonly stats: RegistryStats = {
    requests: 0,
    retries: 0,
    blobsUploaded: 0,
    blobsSkipped: 0,
    blobsMounted: 0,
    blobBytesSent: 0,
    bytesReceived: 0,
    uploadResumes: 0,
    uploadRestarts: 0,
    tokenRequests: 0,
  };
  readonly baseUrl: string;
  private readonly policy: RetryPolicy;
  private readonly chunkSize: number;
  private readonly userAgent: string;
  private readonly onProgress: ((e: ProgressEvent) => void) | undefined;

  private constructor(
    readonly registry: string,
    private readonly transport: Transport,
    private readonly auth: Authenticator,
    opts: RegistryClientOptions,
  ) {
    this.baseUrl = `${opts.insecure ? 'http' : 'https'}://${registryApiHost(registry)}`;
    this.policy = { ...DEFAULT_RETRY, ...opts.retry };
    this.chunkSize = opts.chunkSize ?? 32 << 20;
    if (!(this.chunkSize >= 1)) throw new InputError(`chunk size ${opts.chunkSize} must be at least 1 byte`);
    this.userAgent = opts.userAgent ?? 'ossify';
    this.onProgress = opts.onProgress;
  }

  static async create(registry: string, opts: RegistryClientOptions = {}): Promise<RegistryClient> {
    if (opts.insecure && !isLoopbackRegistry(registry)) {
      throw new InputError(`--insecure (plain HTTP) is only allowed for a registry on this machine, not ${registry}`, {
        hint: 'give the registry a certificate and pass --ca-file for a private CA',
      });
    }
    let ca = opts.ca;
    if (opts.caFile !== undefined) {
      try {
        ca = await readFile(opts.caFile);
      } catch (err) {
        throw new InputError(`cannot read CA file ${opts.caFile}`, { cause: err });
      }
      if (!ca.toString('utf8').includes('-----BEGIN CERTIFICATE-----')) throw new InputError(`${opts.caFile} holds no PEM certificate`);
    }
    if (ca !== undefined && opts.transport === 'fetch') {
      throw new InputError('a custom CA needs the node transport: Node\'s fetch cannot take one without the undici package');
    }
    let transport: Transport;
    if (typeof opts.transport === 'object') transport = opts.transport;
    else if (opts.transport === 'node' || ca !== undefined) transport = nodeTransport(ca !== undefined ? { ca } : {});
    else transport = fetchTransport();
    const creds = opts.credentials === null ? undefined : (opts.credentials ?? (await loadDockerCredentials(registry, opts.dockerConfig)));
    return new RegistryClient(registry, transport, new Authenticator(registry, transport, creds), opts);
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  private url(path: string): string {
    return `${this.baseUrl}/v2/${path}`;
  }

  private backoff(attempt: number, hintMs?: number): number {
    const exp = Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** (attempt - 1));
    const jittered = exp / 2 + Math.random() * (exp / 2);
    return Math.min(Math.max(jittered, hintMs ?? 0), this.policy.maxDelayMs * 4);
  }

  private async pause(what: string, attempt: number, err: unknown): Promise<void> {
    this.stats.retries++;
    const delayMs = this.backoff(attempt, err instanceof RetryableStatusError ? err.retryAfterMs : undefined);
    this.onProgress?.({ type: 'retry', what, attempt, error: err instanceof Error ? err.message : String(err), delayMs });
    await sleep(delayMs);
  }

  /** Runs a whole exchange (request and reading its answer) again on transient failure. */
  private async retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (!isRetryable(err)) throw err;
        if (attempt >= this.policy.attempts) {
          const hint = err instanceof OssifyError ? err.hint : undefined;
          throw new OssifyError(`${what}: gave up after ${attempt} attempts: ${(err as Error).message}`, { cause: err, ...(hint !== undefined ? { hint } : {}) });
        }
        await this.pause(what, attempt, err);
      }
    }
  }

  /**
   * One request with authentication: adds the Authorization the scopes need, answers a
   * 401 with a fresh token or credentials, and turns 5xx/429 into RetryableStatusError.
   * Redirects of GET/HEAD are followed without credentials when they leave the registry.
   */
  private async send(req: HttpRequest, scopes: readonly string[]): Promise<HttpResponse> {
    const base = new URL(this.baseUrl).origin;
    let current = req;
    for (let hop = 0; ; hop++) {
      const sameOrigin = new URL(current.url).origin === base;
      let { res, sent } = await this.once(current, sameOrigin ? scopes : undefined);
      // Two rounds: one to learn the scheme (or replace a token that expired), one more
      // when the first token was refused too (revoked, expired on arrival).
      let why = '';
      for (let round = 0; res.status === 401 && sameOrigin && round < 2; round++) {
        const challenge = res.header('www-authenticate');
        why = await this.errorText(res);
        const retry = await this.auth.challenge(challenge, scopes, sent);
        this.stats.tokenRequests = this.auth.stats.tokenRequests;
        if (!retry) break;
        ({ res, sent } = await this.once(current, scopes));
        why = '';
      }
      if (res.status === 401 && sameOrigin) {
        if (!why) why = await this.errorText(res);
        throw new AuthError(
          `${req.method} ${new URL(req.url).pathname}: ${this.registry} refused the credentials${why ? `: ${why}` : ''}`,
          this.auth.hasCredentials ? 'check the credentials in your docker config.json' : `log in to ${this.registry} (docker config.json auths)`,
        );
      }
      if (isRetryableStatus(res.status)) {
        const ra = retryAfterMs(res.header('retry-after'));
        await res.discard();
        throw new RetryableStatusError(`${req.method} ${new URL(req.url).pathname}: ${this.registry} answered ${res.status}`, res.status, ra);
      }
      const loc = res.header('location');
      if ((req.method === 'GET' || req.method === 'HEAD') && [301, 302, 303, 307, 308].includes(res.status) && loc && hop < 5) {
        await res.discard();
        current = { ...req, url: new URL(loc, current.url).toString() };
        continue;
      }
      return res;
    }
  }

  private async once(req: HttpRequest, scopes: readonly string[] | undefined): Promise<{ res: HttpResponse; sent: string | undefined }> {
    const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
    delete headers.authorization;
    if (scopes) {
      const a = await this.auth.header(scopes);
      this.stats.tokenRequests = this.auth.stats.tokenRequests;
      if (a) headers.authorization = a;
    }
    this.stats.requests++;
    return { res: await this.transport.request({ ...req, headers }), sent: headers.authorization };
  }

  /** The registry's error body (`{"errors":[{code,message}]}`), condensed to one line. */
  private async errorText(res: HttpResponse): Promise<string> {
    const text = await res.text(65536).catch(() => '');
    try {
      const j = JSON.parse(text) as { errors?: { code?: string; message?: string; detail?: unknown }[] };
      if (Array.isArray(j.errors) && j.errors.length > 0) {
        return j.errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
      }
    } catch {
      // not JSON: fall through
    }
    return text.trim().slice(0, 300);
  }

  private async fail(res: HttpResponse, what: string): Promise<never> {
    const text = await this.errorText(res);
    const code = /^([A-Z_]+)(?::|;|$)/.exec(text)?.[1];
    throw new RegistryError(`${what}: ${this.registry} answered ${res.status}${text ? ` (${text})` : ''}`, res.status, code);
  }

  /** `GET /v2/`: reachable, speaks the API, and tells which authentication it wants. */
  async ping(): Promise<void> {
    await this.retrying(`ping ${this.registry}`, async () => {
      const res = await this.send({ method: 'GET', url: `${this.baseUrl}/v2/` }, []);
      if (res.status === 200) return void (await res.discard());
      if (res.status === 404) {
        await res.discard();
        throw new RegistryError(`${this.baseUrl}/v2/ is not an OCI registry (404)`, 404, undefined);
      }
      await this.fail(res, 'ping');
    });
  }

  /** The blob's size when the repository has it. */
  async statBlob(repo: string, digest: string, scopes: readonly string[] = [pullScope(repo)]): Promise<number | undefined> {
    return this.retrying(`HEAD blob ${digest}`, async () => {
      const res = await this.send({ method: 'HEAD', url: this.url(`${repo}/blobs/${digest}`) }, scopes);
      await res.discard();
      if (res.status === 200) return Number(res.header('content-length') ?? NaN);
      if (res.status === 404) return undefined;
      return this.fail(res, `HEAD blob ${digest} in ${repo}`);
    });
  }

  private emit(e: ProgressEvent): void {
    this.onProgress?.(e);
  }

  /**
   * Makes `repo` hold the blob: nothing if it already does, a cross-repository mount when
   * another repository of this registry has it, else an upload that survives broken
   * connections by resuming where the registry says it stands (blob-upload.ts).
   */
  async pushBlob(repo: string, desc: Pick<Descriptor, 'digest' | 'size'>, source: BlobSource, mountFrom: readonly string[] = []): Promise<{ how: 'exists' | 'mounted' | 'uploaded'; from?: string }> {
    return pushBlob(this.uploadClient(), repo, desc, source, mountFrom);
  }

  private uploadClient(): UploadClient {
    return {
      registry: this.registry,
      stats: this.stats,
      policy: this.policy,
      chunkSize: this.chunkSize,
      url: (path) => this.url(path),
      send: (req, scopes) => this.send(req, scopes),
      retrying: (what, fn) => this.retrying(what, fn),
      pause: (what, attempt, err) => this.pause(what, attempt, err),
      errorText: (res) => this.errorText(res),
      fail: (res, what) => this.fail(res, what),
      statBlob: (repo, digest, scopes) => this.statBlob(repo, digest, scopes),
      emit: (e) => this.emit(e),
    };
  }

  /** PUT a manifest or index under a digest or tag; the registry must agree on its digest. */
  async putManifest(repo: string, reference: string, bytes: Uint8Array, mediaType: string): Promise<string> {
    return (await this.putManifestWithSubject(repo, reference, bytes, mediaType)).digest;
  }

  /**
   * PUT a manifest that has a `subject` (OCI distribution 1.1). The registry keeps the
   * referrers list itself only when it answers with an `OCI-Subject` header; otherwise the
   * client must maintain the fallback tag (see referrers.ts). Added for builder/trust.
   */
  async putManifestWithSubject(repo: string, reference: string, bytes: Uint8Array, mediaType: string): Promise<{ digest: string; subjectProcessed: boolean }> {
    const digest = digestOf(bytes);
    return this.retrying(`PUT manifest ${repo}:${reference}`, async () => {
      const res = await this.send({ method: 'PUT', url: this.url(`${repo}/manifests/${reference}`), headers: { 'content-type': mediaType }, body: bytes }, [pushScope(repo)]);
      if (res.status !== 201 && res.status !== 200 && res.status !== 202) return this.fail(res, `PUT manifest ${repo}:${reference}`);
      await res.discard();
      const got = res.header('docker-content-digest');
      if (got !== undefined && got !== digest) throw new DigestMismatchError(`registry stored manifest ${repo}:${reference} as ${got}, we sent ${digest}`);
      return { digest, subjectProcessed: res.header('oci-subject') !== undefined };
    });
  }

  /**
   * `GET /v2/<repo>/referrers/<digest>`: the referrers index, or undefined when the registry has
   * no referrers API (it answers 404, as distribution 2.x does; some answer 405 or 501). Added for builder/trust.
   */
  async getReferrers(repo: string, digest: string, artifactType?: string): Promise<{ bytes: Uint8Array; filtered: boolean } | undefined> {
    assertDigest(digest);
    const q = artifactType !== undefined ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
    return this.retrying(`GET referrers ${repo}@${digest}`, async () => {
      const res = await this.send({ method: 'GET', url: this.url(`${repo}/referrers/${digest}${q}`), headers: { accept: 'application/vnd.oci.image.index.v1+json' } }, [pullScope(repo)]);
      if (res.status === 404 || res.status === 405 || res.status === 501) {
        await res.discard();
        return undefined;
      }
      if (res.status !== 200) return this.fail(res, `GET referrers ${repo}@${digest}`);
      const bytes = Buffer.from(await res.text(4 << 20), 'utf8');
      this.stats.bytesReceived += bytes.length;
      const ct = (res.header('content-type') ?? '').split(';')[0]!.trim();
      if (ct !== 'application/vnd.oci.image.index.v1+json') {
        throw new OssifyError(`GET referrers ${repo}@${digest}: ${this.registry} answered ${ct || 'no content type'}, not an OCI image index`);
      }
      return { bytes, filtered: res.header('oci-filters-applied')?.split(',').map((s) => s.trim()).includes('artifactType') ?? false };
    });
  }

  /** HEAD a manifest: its digest and size, or undefined when absent. */
  async statManifest(repo: string, reference: string): Promise<{ digest: string | undefined; size: number } | undefined> {
    return this.retrying(`HEAD manifest ${repo}:${reference}`, async () => {
      const res = await this.send({ method: 'HEAD', url: this.url(`${repo}/manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT } }, [pullScope(repo)]);
      await res.discard();
      if (res.status === 404) return undefined;
      if (res.status !== 200) return this.fail(res, `HEAD manifest ${repo}:${reference}`);
      return { digest: res.header('docker-content-digest'), size: Number(res.header('content-length') ?? NaN) };
    });
  }

  /** GET a manifest; by digest its bytes must hash to it, by tag its digest is computed here. */
  async getManifest(repo: string, reference: string, maxSize = 4 << 20): Promise<{ bytes: Uint8Array; mediaType: string; digest: string }> {
    const byDigest = reference.includes(':');
    return this.retrying(`GET manifest ${repo}:${reference}`, async () => {
      const res = await this.send({ method: 'GET', url: this.url(`${repo}/manifests/${reference}`), headers: { accept: MANIFEST_ACCEPT } }, [pullScope(repo)]);
      if (res.status === 404) return this.fail(res, `manifest ${repo}@${reference} not found`);
      if (res.status !== 200) return this.fail(res, `GET manifest ${repo}:${reference}`);
      const parts: Uint8Array[] = [];
      let n = 0;
      for await (const c of res.body()) {
        n += c.length;
        if (n > maxSize) throw new OssifyError(`manifest ${repo}:${reference} is larger than ${maxSize} bytes`);
        parts.push(c);
      }
      const expect = Number(res.header('content-length') ?? NaN);
      if (!Number.isNaN(expect) && expect !== n) throw new TransportError(`manifest ${reference}: got ${n} of ${expect} bytes`, { retryable: true });
      this.stats.bytesReceived += n;
      const bytes = Buffer.concat(parts);
      const alg = byDigest ? reference.slice(0, reference.indexOf(':')) : 'sha256';
      const digest = digestOf(bytes, alg);
      if (byDigest && digest !== reference) throw new DigestMismatchError(`manifest ${repo}@${reference}: received bytes hash to ${digest}`);
      let mediaType = (res.header('content-type') ?? '').split(';')[0]!.trim();
      try {
        const mt = (JSON.parse(bytes.toString('utf8')) as { mediaType?: string }).mediaType;
        if (mt) mediaType = mt;
      } catch {
        throw new OssifyError(`manifest ${repo}@${digest} is not JSON`);
      }
      return { bytes, mediaType, digest };
    });
  }

  /**
   * Streams a blob, hashing every byte; the stream throws after its last chunk if the bytes
   * do not match the digest, so a consumer commits nothing until the iteration completes.
   * A connection that breaks mid-way is resumed with a Range request.
   */
  async *fetchBlob(repo: string, desc: Pick<Descriptor, 'digest' | 'size'>): AsyncGenerator<Uint8Array> {
    assertDigest(desc.digest);
    const [alg, hex] = desc.digest.split(':') as [string, string];
    const h = sha(alg);
    let delivered = 0;
    let failures = 0;
    this.emit({ type: 'blob-start', op: 'pull', repo, digest: desc.digest, size: desc.size });
    for (;;) {
      try {
        const headers: Record<string, string> = delivered > 0 ? { range: `bytes=${delivered}-` } : {};
        const res = await this.send({ method: 'GET', url: this.url(`${repo}/blobs/${desc.digest}`), headers }, [pullScope(repo)]);
        let skip = 0;
        if (res.status === 200) skip = delivered; // range ignored: drop what we already have
        else if (res.status === 206) {
          const start = Number(/bytes (\d+)-/.exec(res.header('content-range') ?? '')?.[1] ?? NaN);
          if (!(start <= delivered)) {
            await res.discard();
            throw new OssifyError(`blob ${desc.digest}: asked for bytes from ${delivered}, got a range starting at ${start}`);
          }
          skip = delivered - start;
        } else return await this.fail(res, `GET blob ${desc.digest} from ${repo}`);
        for await (let c of res.body()) {
          if (skip > 0) {
            const s = Math.min(skip, c.length);
            skip -= s;
            c = c.subarray(s);
            if (c.length === 0) continue;
          }
          if (delivered + c.length > desc.size) {
            throw new DigestMismatchError(`blob ${desc.digest} from ${repo}: more than the ${desc.size} bytes its descriptor says`);
          }
          h.update(c);
          delivered += c.length;
          this.stats.bytesReceived += c.length;
          failures = 0;
          yield c;
          this.emit({ type: 'blob-progress', op: 'pull', repo, digest: desc.digest, size: desc.size, done: delivered });
        }
        if (delivered < desc.size) throw new TransportError(`blob ${desc.digest}: stream ended at ${delivered} of ${desc.size} bytes`, { retryable: true });
        break;
      } catch (err) {
        if (!isRetryable(err) || ++failures >= this.policy.attempts) throw err;
        await this.pause(`download of ${desc.digest}`, failures, err);
      }
    }
    const got = h.digest('hex');
    if (got !== hex) throw new DigestMismatchError(`blob ${desc.digest} from ${this.registry}/${repo}: received bytes hash to ${alg}:${got}`);
    this.emit({ type: 'blob-done', op: 'pull', repo, digest: desc.digest, size: desc.size, how: 'downloaded' });
  }

  async fetchBlobBytes(repo: string, desc: Pick<Descriptor, 'digest' | 'size'>, maxSize = 4 << 20): Promise<Uint8Array> {
    if (desc.size > maxSize) throw new OssifyError(`blob ${desc.digest} is ${desc.size} bytes, more than the ${maxSize} expected`);
    const parts: Uint8Array[] = [];
    for await (const c of this.fetchBlob(repo, desc)) parts.push(c);
    return Buffer.concat(parts);
  }
}
