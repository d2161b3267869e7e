import http from 'node:http';
import https from 'node:https';
import { OssifyError } from '../util/errors.ts';

/**
 * One HTTP exchange, the only thing the registry client needs from the network. Two
 * implementations: Node's fetch (the default) and node:http(s), used when the registry's
 * certificate is signed by a CA given on the command line — Node's fetch takes a custom CA
 * only through an undici Agent, and undici is not importable without the npm package.
 * Redirects are never followed here: the client decides, so credentials never leak to
 * another host.
 */
export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  url: string;
  headers?: Record<string, string>;
  body?: Uint8Array | StreamBody;
}

/** A body sent from a stream; `open` is called again for each retry. */
export interface StreamBody {
  length: number;
  open(): AsyncIterable<Uint8Array>;
}

export interface HttpResponse {
  status: number;
  url: string;
  header(name: string): string | undefined;
  /** The body; readable once. Failures arrive as TransportError. */
  body(): AsyncIterable<Uint8Array>;
  /** The body as text, at most `limit` bytes (the rest is dropped). */
  text(limit?: number): Promise<string>;
  /** Drops the body so the connection can be reused or closed. */
  discard(): Promise<void>;
}

export interface Transport {
  readonly kind: 'fetch' | 'node';
  request(req: HttpRequest): Promise<HttpResponse>;
  close(): Promise<void>;
}

/** A failed exchange: no response, or a response whose body broke off. */
export class TransportError extends OssifyError {
  readonly code: string | undefined;
  /** Worth trying again: the connection broke, not the configuration. */
  readonly retryable: boolean;
  constructor(message: string, opts: { code?: string; retryable: boolean; hint?: string; cause?: unknown }) {
    super(message, { ...(opts.hint !== undefined ? { hint: opts.hint } : {}), cause: opts.cause });
    this.name = 'TransportError';
    this.code = opts.code;
    this.retryable = opts.retryable;
  }
}

/** The first error code found in an error, its causes or an AggregateError's members. */
export function errorCode(err: unknown, depth = 0): string | undefined {
  if (depth > 5 || err === null || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string') return e.code;
  if (Array.isArray(e.errors)) {
    for (const x of e.errors) {
      const c = errorCode(x, depth + 1);
      if (c) return c;
    }
  }
  return errorCode(e.cause, depth + 1);
}

function innermostMessage(err: unknown): string {
  let e: unknown = err;
  let msg = err instanceof Error ? err.message : String(err);
  for (let i = 0; i < 5 && e instanceof Error; i++) {
    if (e.message) msg = e.message;
    e = (e as { cause?: unknown }).cause ?? (e instanceof AggregateError ? e.errors[0] : undefined);
  }
  return msg;
}

const TLS_CODES = /^(CERT_|SELF_SIGNED_|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_|ERR_TLS_|ERR_SSL_|EPROTO$|HOSTNAME_MISMATCH)/;

export function toTransportError(err: unknown, req: Pick<HttpRequest, 'method' | 'url'>): TransportError {
  if (err instanceof TransportError) return err;
  const code = errorCode(err);
  const where = `${req.method} ${new URL(req.url).origin}`;
  const detail = innermostMessage(err);
  if (code && TLS_CODES.test(code)) {
    return new TransportError(`${where}: TLS failure: ${detail} (${code})`, {
      code,
      retryable: false,
      cause: err,
      hint: 'if the registry uses a private CA pass --ca-file CA.pem; plain HTTP is only allowed for loopback registries with --insecure',
    });
  }
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return new TransportError(`${where}: cannot connect: ${detail} (${code})`, { code, retryable: false, cause: err, hint: 'is the registry running and the address right?' });
  }
  if (code === 'ABORT_ERR' || (err instanceof Error && err.name === 'AbortError')) {
    return new TransportError(`${where}: aborted`, { code: code ?? 'ABORT_ERR', retryable: false, cause: err });
  }
  // Resets, premature closes, parser errors on half-sent responses, timeouts: the network, not us.
  return new TransportError(`${where}: connection failed: ${detail}${code ? ` (${code})` : ''}`, { ...(code ? { code } : {}), retryable: true, cause: err });
}

async function* guardBody(it: AsyncIterable<Uint8Array>, req: HttpRequest): AsyncGenerator<Uint8Array> {
  try {
    for await (const c of it) yield c;
  } catch (err) {
    throw toTransportError(err, req);
  }
}

async function readText(it: AsyncIterable<Uint8Array>, limit: number): Promise<string> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const c of it) {
    if (n < limit) parts.push(c.subarray(0, limit - n));
    n += c.length;
    if (n >= limit) break;
  }
  return Buffer.concat(parts).toString('utf8');
}

function toWebStream(body: StreamBody): ReadableStream<Uint8Array> {
  let it: AsyncIterator<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      it ??= body.open()[Symbol.asyncIterator]();
      const r = await it.next();
      if (r.done) controller.close();
      else controller.enqueue(r.value);
    },
    async cancel() {
      await it?.return?.();
    },
  });
}

export function fetchTransport(): Transport {
  // The fetch standard blocks some ports (6000, 5060, …) a registry may well listen on.
  let fallback: Transport | undefined;
  return {
    kind: 'fetch',
    async request(req) {
      if (fallback) return fallback.request(req);
      const headers = { ...req.headers };
      const init: RequestInit & { duplex?: 'half' } = { method: req.method, headers, redirect: 'manual' };
      if (req.body instanceof Uint8Array && req.body.length <= 1 << 20) {
        init.body = req.body;
      } else if (req.body instanceof Uint8Array) {
        // Handed over whole, a large buffer crawls through fetch's body machinery; slices stream.
        const bytes = req.body;
        headers['content-length'] = String(bytes.length);
        init.body = toWebStream({
          length: bytes.length,
          async *open() {
            for (let o = 0; o < bytes.length; o += 1 << 20) yield bytes.subarray(o, o + (1 << 20));
          },
        });
        init.duplex = 'half';
      } else if (req.body) {
        headers['content-length'] = String(req.body.length);
        init.body = toWebStream(req.body);
        init.duplex = 'half';
      }
      let res: Response;
      try {
        res = await fetch(req.url, init);
      } catch (err) {
        if (innermostMessage(err) === 'bad port') {
          fallback = nodeTransport();
          return fallback.request(req);
        }
        throw toTransportError(err, req);
      }
      let used = false;
      const body = (): AsyncIterable<Uint8Array> => {
        if (used) throw new Error('response body already read');
        used = true;
        return guardBody((res.body ?? []) as AsyncIterable<Uint8Array>, req);
      };
      return {
        status: res.status,
        url: req.url,
        header: (n) => res.headers.get(n) ?? undefined,
        body,
        text: async (limit = 1 << 20) => readText(body(), limit),
        async discard() {
          if (used || !res.body) return;
          used = true;
          // Reading a short error body to its end keeps the connection; a long one is not worth it.
          const len = Number(res.headers.get('content-length') ?? 'NaN');
          if (len >= 0 && len <= 65536) await readText(guardBody(res.body as AsyncIterable<Uint8Array>, req), 65536).catch(() => {});
          else await res.body.cancel().catch(() => {});
        },
      };
    },
    async close() {
      await fallback?.close();
    },
  };
}

export interface NodeTransportOptions {
  /** PEM CA certificate(s) the registry's chain must lead to (replaces the system store). */
  ca?: string | Buffer;
  /** Idle socket timeout in ms. */
  timeoutMs?: number;
}

export function nodeTransport(opts: NodeTransportOptions = {}): Transport {
  const httpAgent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 8, ...(opts.ca !== undefined ? { ca: opts.ca } : {}) });
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return {
    kind: 'node',
    request(req) {
      return new Promise<HttpResponse>((resolve, reject) => {
        const url = new URL(req.url);
        const isHttps = url.protocol === 'https:';
        const headers: Record<string, string> = { ...req.headers };
        if (req.body instanceof Uint8Array) headers['content-length'] = String(req.body.length);
        else if (req.body) headers['content-length'] = String(req.body.length);
        else if (req.method === 'PUT' || req.method === 'POST' || req.method === 'PATCH') headers['content-length'] = '0';
        const creq = (isHttps ? https : http).request(url, { method: req.method, headers, agent: isHttps ? httpsAgent : httpAgent });
        let settled = false;
        creq.setTimeout(timeoutMs, () => creq.destroy(Object.assign(new Error(`no data for ${timeoutMs} ms`), { code: 'ETIMEDOUT' })));
        creq.on('error', (err) => {
          if (!settled) {
            settled = true;
            reject(toTransportError(err, req));
          }
        });
        creq.on('response', (res) => {
          settled = true;
          let used = false;
          // An error after the headers belongs to the body reader; keep it from being unhandled.
          res.on('error', () => {});
          const body = (): AsyncIterable<Uint8Array> => {
            if (used) throw new Error('response body already read');
            used = true;
            return guardBody(
              (async function* () {
                let n = 0;
                for await (const c of res) {
                  n += (c as Buffer).length;
                  yield c as Buffer;
                }
                // Node ends a message cut short by a closed socket without an error; the length tells.
                const cl = res.headers['content-length'];
                if (!res.complete || (cl !== undefined && req.method !== 'HEAD' && n !== Number(cl))) {
                  throw Object.assign(new Error(`response ended after ${n} of ${cl ?? '?'} bytes`), { code: 'ECONNRESET' });
                }
              })(),
              req,
            );
          };
          resolve({
            status: res.statusCode ?? 0,
            url: req.url,
            header: (n) => {
              const v = res.headers[n.toLowerCase()];
              return Array.isArray(v) ? v.join(', ') : v;
            },
            body,
            text: async (limit = 1 << 20) => readText(body(), limit),
            async discard() {
              if (used) return;
              used = true;
              // A HEAD answer has no body whatever its Content-Length says.
              const len = req.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304 ? 0 : Number(res.headers['content-length'] ?? 'NaN');
              if (len >= 0 && len <= 65536) {
                res.resume();
                await new Promise<void>((r) => {
                  res.on('end', r);
                  res.on('close', r);
                });
              } else {
                res.destroy();
              }
            },
          });
        });
        (async () => {
          if (req.body instanceof Uint8Array) {
            creq.end(req.body);
            return;
          }
          if (req.body) {
            for await (const c of req.body.open()) {
              if (creq.destroyed) return;
              if (!creq.write(c)) {
                await new Promise<void>((r) => {
                  const done = () => {
                    creq.off('drain', done);
                    creq.off('close', done);
                    r();
                  };
                  creq.on('drain', done);
                  creq.on('close', done);
                });
              }
            }
          }
          creq.end();
        })().catch((err: unknown) => creq.destroy(err instanceof Error ? err : new Error(String(err))));
      });
    },
    async close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}
