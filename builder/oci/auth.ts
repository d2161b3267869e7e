import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { InputError, OssifyError } from '../util/errors.ts';
import { isLoopbackRegistry } from './reference.ts';
import { type Transport, toTransportError } from './transport.ts';

export interface Credentials {
  username: string;
  password: string;
}

/** A registry said no for a reason more tries will not fix. */
export class AuthError extends OssifyError {
  constructor(message: string, hint?: string) {
    super(message, hint !== undefined ? { hint } : {});
    this.name = 'AuthError';
  }
}

/** An HTTP answer worth retrying (5xx, 429), carrying how long the server asked us to wait. */
export class RetryableStatusError extends OssifyError {
  constructor(
    message: string,
    readonly status: number,
    readonly retryAfterMs: number | undefined,
  ) {
    super(message);
    this.name = 'RetryableStatusError';
  }
}

export function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 408 || (status >= 500 && status !== 501 && status !== 505);
}

export function retryAfterMs(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const t = Date.parse(header);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses WWW-Authenticate (RFC 7235). Several challenges may share one header, joined by
 * commas, so a new challenge starts at a token that is not followed by `=`.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const s = header;
  const skipWs = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === ',')) i++;
  };
  const token = () => {
    const m = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(s.slice(i));
    if (!m) return '';
    i += m[0].length;
    return m[0];
  };
  let cur: Challenge | undefined;
  while (i < s.length) {
    skipWs();
    const start = i;
    const t = token();
    if (!t) {
      i++;
      continue;
    }
    let j = i;
    while (j < s.length && s[j] === ' ') j++;
    if (s[j] === '=' && cur) {
      i = j + 1;
      while (s[i] === ' ') i++;
      let v = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          v += s[i];
          i++;
        }
        i++;
      } else {
        const m = /^[^,\s]*/.exec(s.slice(i))!;
        v = m[0];
        i += v.length;
      }
      cur.params[t.toLowerCase()] = v;
    } else {
      // token68 after a scheme (e.g. `Basic dXNlcg==`) is not used by registries; skip it.
      if (cur && i === start) i++;
      cur = { scheme: t.toLowerCase(), params: {} };
      out.push(cur);
    }
  }
  return out;
}

/** Token scopes of one repository; pushing asks for pull too, as a push first checks (HEAD) what the repository holds. */
export const pushScope = (repo: string) => `repository:${repo}:pull,push`;
export const pullScope = (repo: string) => `repository:${repo}:pull`;

/** `repository:name:pull,push` scopes as resource -> actions. */
function parseScopes(scopes: readonly string[]): Map<string, Set<string>> {
  const m = new Map<string, Set<string>>();
  for (const s of scopes) {
    const i = s.lastIndexOf(':');
    if (i < 0) continue;
    const res = s.slice(0, i);
    const set = m.get(res) ?? new Set<string>();
    for (const a of s.slice(i + 1).split(',')) if (a) set.add(a);
    m.set(res, set);
  }
  return m;
}

function covers(have: Map<string, Set<string>>, want: Map<string, Set<string>>): boolean {
  for (const [res, actions] of want) {
    const h = have.get(res);
    if (!h) return false;
    for (const a of actions) if (!h.has(a) && !h.has('*')) return false;
  }
  return true;
}

export interface DockerConfigOptions {
  /** Path of config.json; default `$DOCKER_CONFIG/config.json`, then `~/.docker/config.json`. */
  path?: string;
  env?: NodeJS.ProcessEnv;
}

const HUB_KEYS = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

function authKeyHost(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
}

export function dockerConfigPath(opts: DockerConfigOptions = {}): string {
  if (opts.path) return opts.path;
  const env = opts.env ?? process.env;
  if (env.DOCKER_CONFIG) return join(env.DOCKER_CONFIG, 'config.json');
  return join(env.HOME || homedir(), '.docker', 'config.json');
}

/** Credentials for `registry` from docker's config.json (`auths`, base64 `auth` or username/password). */
export async function loadDockerCredentials(registry: string, opts: DockerConfigOptions = {}): Promise<Credentials | undefined> {
  const p = dockerConfigPath(opts);
  let text: string;
  try {
    text = await readFile(p, 'utf8');
  } catch {
    return undefined;
  }
  let cfg: { auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }> };
  try {
    cfg = JSON.parse(text) as typeof cfg;
  } catch (err) {
    throw new InputError(`${p} is not valid JSON`, { cause: err });
  }
  const want = registry.toLowerCase();
  const wanted = HUB_KEYS.includes(want) ? HUB_KEYS : [want];
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (!wanted.includes(authKeyHost(key)) || !entry) continue;
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const c = decoded.indexOf(':');
      if (c < 0) throw new InputError(`${p}: auths[${JSON.stringify(key)}].auth is not base64 of user:password`);
      return { username: decoded.slice(0, c), password: decoded.slice(c + 1) };
    }
    if (entry.username !== undefined && entry.password !== undefined) return { username: entry.username, password: entry.password };
  }
  return undefined;
}

interface CachedToken {
  token: string;
  /** What it was asked for: resource -> actions. */
  grants: Map<string, Set<string>>;
  /** Milliseconds since the epoch after which we fetch a new one rather than be refused. */
  refreshAt: number;
}

export interface AuthStats {
  tokenRequests: number;
}

/**
 * Decides the Authorization header of each request: Basic with the user's credentials, or a
 * Bearer token from the realm the registry named, per set of scopes, refreshed before it
 * expires and again whenever the registry refuses it.
 */
export class Authenticator {
  private scheme: 'none' | 'basic' | 'bearer' = 'none';
  private realm: string | undefined;
  private service: string | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  readonly stats: AuthStats = { tokenRequests: 0 };

  constructor(
    private readonly registry: string,
    private readonly transport: Transport,
    private readonly credentials: Credentials | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  get hasCredentials(): boolean {
    return this.credentials !== undefined;
  }

  private basic(): string {
    const c = this.credentials!;
    return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  }

  /** The header to send for a request needing `scopes`, or undefined when none is known to be needed. */
  async header(scopes: readonly string[]): Promise<string | undefined> {
    if (this.scheme === 'basic') return this.basic();
    if (this.scheme !== 'bearer') return undefined;
    const key = [...new Set(scopes)].sort().join(' ');
    const now = this.now();
    const exact = this.tokens.get(key);
    if (exact && exact.refreshAt > now) return `Bearer ${exact.token}`;
    // A token asked for push and pull on a repository serves a pull of it too.
    const want = parseScopes(scopes);
    for (const t of this.tokens.values()) {
      if (t.refreshAt > now && covers(t.grants, want)) return `Bearer ${t.token}`;
    }
    return `Bearer ${await this.fetchToken(key, scopes)}`;
  }

  /**
   * Learns from a 401. Returns true when a new attempt may succeed (new scheme, new token),
   * false when the same request would only be refused again.
   */
  async challenge(wwwAuthenticate: string | undefined, scopes: readonly string[], sent: string | undefined): Promise<boolean> {
    const chs = parseChallenges(wwwAuthenticate ?? '');
    const bearer = chs.find((c) => c.scheme === 'bearer');
    const basic = chs.find((c) => c.scheme === 'basic');
    if (bearer && bearer.params.realm) {
      this.scheme = 'bearer';
      this.realm = bearer.params.realm;
      this.service = bearer.params.service;
      // The registry may name more scopes than we asked for (a mount's source repository).
      const extra = (bearer.params.scope ?? '').split(' ').filter(Boolean);
      const key = [...new Set(scopes)].sort().join(' ');
      // Whatever token was sent is no good for these scopes any more.
      const token = sent?.startsWith('Bearer ') ? sent.slice(7) : undefined;
      for (const [k, t] of this.tokens) if (k === key || t.token === token) this.tokens.delete(k);
      await this.fetchToken(key, [...new Set([...scopes, ...extra])]);
      return true;
    }
    if (basic) {
      if (!this.credentials) {
        throw new AuthError(`${this.registry} requires a login`, `add credentials for ${this.registry} to ${dockerConfigPath()} (docker login ${this.registry})`);
      }
      if (sent?.startsWith('Basic ')) return false;
      this.scheme = 'basic';
      return true;
    }
    return false;
  }

  private readonly inflight = new Map<string, Promise<string>>();

  /** Parallel requests needing the same scopes share one token request. */
  private fetchToken(key: string, scopes: readonly string[]): Promise<string> {
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const p = this.requestToken(key, scopes).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async requestToken(key: string, scopes: readonly string[]): Promise<string> {
    if (!this.realm) throw new AuthError(`${this.registry} asked for a token but named no realm`);
    const url = new URL(this.realm);
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && isLoopbackRegistry(url.host))) {
      throw new AuthError(`${this.registry}'s token realm ${this.realm} is not HTTPS; refusing to send credentials to it`);
    }
    if (this.service) url.searchParams.set('service', this.service);
    for (const s of [...new Set(scopes)].sort()) url.searchParams.append('scope', s);
    if (this.credentials) url.searchParams.set('account', this.credentials.username);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.credentials) headers.authorization = this.basic();
    this.stats.tokenRequests++;
    const req = { method: 'GET' as const, url: url.toString(), headers };
    const res = await this.transport.request(req);
    if (res.status !== 200) {
      const body = await res.text(4096).catch(() => '');
      if (res.status === 401 || res.status === 403) {
        throw new AuthError(
          `token server ${url.origin} refused ${this.credentials ? `user ${this.credentials.username}` : 'anonymous access'} for ${scopes.join(' ') || 'the registry'}: ${res.status} ${body.slice(0, 200)}`.trim(),
          `check the credentials for ${this.registry} in ${dockerConfigPath()}`,
        );
      }
      if ([429, 500, 502, 503, 504].includes(res.status)) {
        throw new RetryableStatusError(`token server ${url.origin} answered ${res.status}`, res.status, retryAfterMs(res.header('retry-after')));
      }
      throw new AuthError(`token server ${url.origin} answered ${res.status}: ${body.slice(0, 200)}`);
    }
    let json: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      json = JSON.parse(await res.text(1 << 20)) as typeof json;
    } catch (err) {
      // A cut-off body parses as bad JSON; that is the network's fault.
      throw toTransportError(err, req);
    }
    const token = json.token ?? json.access_token;
    if (!token) throw new AuthError(`token server ${url.origin} returned no token`);
    const lifetime = (typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in : 60) * 1000;
    // Refresh a little early so a request never leaves with a token about to lapse.
    this.tokens.set(key, { token, grants: parseScopes(scopes), refreshAt: this.now() + Math.max(lifetime - 10_000, lifetime / 2) });
    return token;
  }
}
