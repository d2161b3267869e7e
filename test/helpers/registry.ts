import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, createSign, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertStaticElf } from '../../builder/release/installer-image.ts';
import { requireTool, runOk } from './oracle.ts';
import { prng } from './prng.ts';

/**
 * A real docker-registry (Debian's distribution v2) on a free 127.0.0.1 port with its own
 * storage, in the variants the client must handle: plain HTTP, TLS with a self-signed CA,
 * htpasswd basic auth, and token auth with a token server written here.
 */

export function requireRegistryOracles(): void {
  requireTool('docker-registry', 'docker-registry');
  requireTool('skopeo', 'skopeo');
  requireTool('umoci', 'umoci');
  requireTool('openssl', 'openssl');
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export interface Users {
  [username: string]: string;
}

export interface RegistryOptions {
  tls?: boolean;
  /** Basic auth with a bcrypt htpasswd file made by apache2-utils' htpasswd. */
  htpasswd?: Users;
  /** Bearer token auth through a token server started alongside. */
  token?: TokenServerOptions;
}

export interface RegistryHandle {
  /** host:port, for references. */
  host: string;
  port: number;
  url: string;
  dir: string;
  /** PEM of the CA that signed the registry certificate (TLS only). */
  caFile?: string;
  /** A directory with ca.crt, for skopeo --cert-dir (TLS only). */
  certDir?: string;
  tokenServer?: TokenServer;
  /** Arguments that make skopeo reach this registry (TLS verification or not, credentials). */
  skopeoArgs(kind: 'src' | 'dest' | 'inspect', user?: string): string[];
  stop(): Promise<void>;
}

function openssl(args: string[], cwd: string): void {
  runOk('openssl', args, { cwd });
}

/** A CA and a server certificate for 127.0.0.1/localhost signed by it. */
export function makeTlsFiles(dir: string): { caFile: string; certFile: string; keyFile: string } {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=ossify test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'], dir);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext'], dir);
  return { caFile: join(dir, 'ca.crt'), certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key') };
}

function htpasswdFile(path: string, users: Users): void {
  requireTool('htpasswd', 'apache2-utils');
  const lines = Object.entries(users).map(([u, p]) => runOk('htpasswd', ['-Bbn', '-C', '5', u, p]).trim());
  writeFileSync(path, `${lines.join('\n')}\n`);
}

async function waitReady(url: string, ca: Buffer | undefined, proc: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`docker-registry exited with ${proc.exitCode}:\n${stderr()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const mod = url.startsWith('https') ? https : http;
      const req = mod.get(`${url}/v2/`, ca ? { ca } : {}, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
      req.setTimeout(1000, () => req.destroy());
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`docker-registry did not answer on ${url} within 15 s:\n${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<RegistryHandle> {
  requireRegistryOracles();
  const dir = mkdtempSync(join(tmpdir(), 'ossify-registry-'));
  let tokenServer: TokenServer | undefined;
  try {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const tls = opts.tls ? makeTlsFiles(dir) : undefined;
    const lines = [
      'version: 0.1',
      'log:',
      '  level: error',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'storage')}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: ${host}`,
      '  secret: ossify-test-secret',
    ];
    if (tls) lines.push('  tls:', `    certificate: ${tls.certFile}`, `    key: ${tls.keyFile}`);
    if (opts.htpasswd) {
      htpasswdFile(join(dir, 'htpasswd'), opts.htpasswd);
      lines.push('auth:', '  htpasswd:', '    realm: ossify-test', `    path: ${join(dir, 'htpasswd')}`);
    } else if (opts.token) {
      tokenServer = await startTokenServer(dir, opts.token);
      lines.push(
        'auth:',
        '  token:',
        `    realm: ${tokenServer.url}/token`,
        `    service: ${tokenServer.service}`,
        `    issuer: ${tokenServer.issuer}`,
        `    rootcertbundle: ${tokenServer.certFile}`,
      );
    }
    writeFileSync(join(dir, 'config.yml'), `${lines.join('\n')}\n`);
    const proc = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-8000);
    });
    const url = `${tls ? 'https' : 'http'}://${host}`;
    const ca = tls ? readFileSync(tls.caFile) : undefined;
    try {
      await waitReady(url, ca, proc, () => err);
    } catch (e) {
      proc.kill('SIGKILL');
      throw e;
    }
    let certDir: string | undefined;
    if (tls) {
      certDir = join(dir, 'certs.d');
      mkdirSync(certDir);
      writeFileSync(join(certDir, 'ca.crt'), ca!);
    }
    const handle: RegistryHandle = {
      host,
      port,
      url,
      dir,
      ...(tls ? { caFile: tls.caFile, certDir: certDir! } : {}),
      ...(tokenServer ? { tokenServer } : {}),
      skopeoArgs(kind, user) {
        const p = kind === 'inspect' ? '' : `${kind}-`;
        const out = tls ? [`--${p}cert-dir`, certDir!] : [`--${p}tls-verify=false`];
        const users = opts.htpasswd ?? opts.token?.users;
        if (user && users) out.push(`--${p}creds`, `${user}:${users[user]}`);
        return out;
      },
      async stop() {
        await new Promise<void>((resolve) => {
          if (proc.exitCode !== null) return resolve();
          proc.once('exit', () => resolve());
          proc.kill('SIGTERM');
          setTimeout(() => proc.kill('SIGKILL'), 3000).unref();
        });
        await tokenServer?.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
    return handle;
  } catch (e) {
    await tokenServer?.close();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Token server (docker token auth spec: GET realm?service=&scope=, Basic credentials, JWT reply)

export interface TokenServerOptions {
  users: Users;
  /** Token lifetime announced in expires_in, seconds. */
  expiresIn?: number;
  /** The first N tokens are issued already expired (past the registry's 60 s leeway), to force a refresh. */
  expiredFirst?: number;
}

export interface TokenServer {
  url: string;
  service: string;
  issuer: string;
  certFile: string;
  /** Every token request: who asked for which scopes. */
  requests: { account: string | undefined; scopes: string[] }[];
  close(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export async function startTokenServer(dir: string, opts: TokenServerOptions): Promise<TokenServer> {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'token.key', '-out', 'token.crt', '-days', '2', '-subj', '/CN=ossify test token signer'], dir);
  const key = readFileSync(join(dir, 'token.key'));
  const certPem = readFileSync(join(dir, 'token.crt'), 'utf8');
  const x5c = certPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const service = 'ossify-test-registry';
  const issuer = 'ossify-test-issuer';
  const requests: TokenServer['requests'] = [];
  let expiredLeft = opts.expiredFirst ?? 0;

  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let account: string | undefined;
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const [user, ...rest] = Buffer.from(auth.slice(6), 'base64').toString('utf8').split(':');
      if (opts.users[user!] !== rest.join(':')) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"wrong username or password"}');
        return;
      }
      account = user;
    }
    const scopes = u.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    requests.push({ account, scopes });
    // Authenticated users get what they ask for; anonymous callers get nothing.
    const access = account
      ? scopes.map((s) => {
          const [type, ...mid] = s.split(':');
          const actions = mid.pop()!;
          return { type, name: mid.join(':'), actions: actions.split(',') };
        })
      : [];
    const now = Math.floor(Date.now() / 1000);
    const expired = expiredLeft > 0;
    if (expired) expiredLeft--;
    const exp = expired ? now - 300 : now + (opts.expiresIn ?? 300);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [x5c] };
    const claims = { iss: issuer, sub: account ?? '', aud: service, exp, nbf: now - 10 - (expired ? 600 : 0), iat: now - (expired ? 600 : 0), jti: randomUUID(), access };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = createSign('RSA-SHA256').update(signingInput).sign(key);
    const token = `${signingInput}.${b64url(sig)}`;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: opts.expiresIn ?? 300, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    service,
    issuer,
    certFile: join(dir, 'token.crt'),
    requests,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

// ---------------------------------------------------------------------------------------------
// Fault-injecting proxy

export interface FaultRates {
  /** Answer 500 without forwarding. */
  error500?: number;
  /** Answer 429 (Retry-After: 0) without forwarding. */
  error429?: number;
  /** For requests with a body: forward part of it, then cut both connections. */
  dropUpload?: number;
  /** Forward the request, then send only part of the response (nothing at all if it has no body). */
  truncate?: number;
  /** Flip one byte of blob GET bodies (length unchanged). */
  corruptBlob?: number;
}

export interface FaultProxy {
  host: string;
  port: number;
  rates: FaultRates;
  /** Faults stop after this many (the test's bound on the work). */
  maxFaults: number;
  stats: { requests: number; faults: Record<string, number> };
  close(): Promise<void>;
}

export async function startFaultProxy(target: { host: string; port: number }, seed: number, rates: FaultRates, maxFaults = 1000): Promise<FaultProxy> {
  const rnd = prng(seed);
  const proxy: FaultProxy = { host: '', port: 0, rates, maxFaults, stats: { requests: 0, faults: {} }, close: async () => {} };
  const total = () => Object.values(proxy.stats.faults).reduce((a, b) => a + b, 0);
  const pick = (hasBody: boolean, isBlobGet: boolean): string | undefined => {
    if (total() >= proxy.maxFaults) return undefined;
    const r = proxy.rates;
    const x = rnd();
    let acc = 0;
    for (const [kind, p] of [
      ['error500', r.error500],
      ['error429', r.error429],
      ['dropUpload', hasBody ? r.dropUpload : 0],
      ['truncate', r.truncate],
      ['corruptBlob', isBlobGet ? r.corruptBlob : 0],
    ] as const) {
      acc += p ?? 0;
      if (x < acc) return kind;
    }
    return undefined;
  };
  const sockets = new Set<import('node:net').Socket>();

  const server = http.createServer((req, res) => {
    proxy.stats.requests++;
    const len = Number(req.headers['content-length'] ?? 0);
    const hasBody = len > 0 || req.headers['transfer-encoding'] === 'chunked';
    const isBlobGet = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
    const fault = pick(hasBody, isBlobGet);
    if (fault) proxy.stats.faults[fault] = (proxy.stats.faults[fault] ?? 0) + 1;

    if (fault === 'error500' || fault === 'error429') {
      req.resume();
      const status = fault === 'error500' ? 500 : 429;
      const body = JSON.stringify({ errors: [{ code: 'UNKNOWN', message: `injected ${status}` }] });
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...(status === 429 ? { 'retry-after': '0' } : {}) });
      res.end(body);
      return;
    }

    const up = http.request({ host: target.host, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false });
    up.on('error', () => res.destroy());
    if (fault === 'dropUpload') {
      const cutAt = Math.floor(rnd() * len);
      let seen = 0;
      req.on('data', (d: Buffer) => {
        if (seen < cutAt) up.write(d.subarray(0, Math.max(0, cutAt - seen)));
        seen += d.length;
        if (seen >= cutAt) {
          up.destroy();
          req.socket.destroy();
        }
      });
      req.on('end', () => {
        up.destroy();
        req.socket.destroy();
      });
      return;
    }
    req.pipe(up);
    up.on('response', (ur) => {
      const bodyLen = Number(ur.headers['content-length'] ?? -1);
      if (fault === 'truncate') {
        if (!(bodyLen > 0) || req.method === 'HEAD') {
          ur.resume();
          ur.on('end', () => req.socket.destroy());
          return;
        }
        res.writeHead(ur.statusCode ?? 502, ur.headers);
        const keep = Math.floor(bodyLen / 2);
        let sent = 0;
        ur.on('data', (d: Buffer) => {
          if (sent < keep) res.write(d.subarray(0, keep - sent));
          sent += d.length;
          if (sent >= keep) {
            ur.destroy();
            req.socket.destroy();
          }
        });
        return;
      }
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      if (fault === 'corruptBlob' && ur.statusCode === 200) {
        let first = true;
        ur.on('data', (d: Buffer) => {
          if (first && d.length > 0) {
            const c = Buffer.from(d);
            c[0] = c[0]! ^ 0xff;
            first = false;
            res.write(c);
          } else res.write(d);
        });
        ur.on('end', () => res.end());
        return;
      }
      ur.pipe(res);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  proxy.port = port;
  proxy.host = `127.0.0.1:${port}`;
  proxy.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return proxy;
}

// ---------------------------------------------------------------------------------------------
// A fabricated build output (the out/<name>-<version>/ contract), small files only.

export interface FakeBuild {
  dir: string;
  files: Record<string, Buffer>;
  buildJson: Record<string, unknown>;
}

/** Deterministic pseudo-random bytes: incompressible like a squashfs, reproducible like a build. */
export function pseudoRandomBytes(size: number, seed: number): Buffer {
  const r = prng(seed);
  const b = Buffer.allocUnsafe(size);
  let i = 0;
  for (; i + 4 <= size; i += 4) b.writeUInt32LE(Math.floor(r() * 4294967296), i);
  for (; i < size; i++) b[i] = Math.floor(r() * 256);
  return b;
}

export function makeBuildOutput(
  root: string,
  opts: { name?: string; version?: string; arch?: string; seed?: number; rootfsSize?: number; epoch?: number; extra?: Record<string, unknown> } = {},
): FakeBuild {
  const name = opts.name ?? 'ossify-default';
  const version = opts.version ?? '1.0.0';
  const seed = opts.seed ?? 1;
  const dir = join(root, `${name}-${version}`);
  mkdirSync(dir, { recursive: true });
  const files: Record<string, Buffer> = {
    'rootfs.squashfs': pseudoRandomBytes(opts.rootfsSize ?? 1_500_000, seed),
    vmlinuz: pseudoRandomBytes(200_003, seed + 1),
    'initramfs.img': pseudoRandomBytes(300_001, seed + 2),
    'disk.raw': Buffer.alloc(65_536, 0),
  };
  const artifacts: Record<string, { sha256: string; size: number }> = {};
  for (const [n, b] of Object.entries(files)) {
    writeFileSync(join(dir, n), b);
    artifacts[n] = { sha256: createHashHex(b), size: b.length };
  }
  const buildJson = {
    name,
    version,
    arch: opts.arch ?? 'x86_64',
    profileDigest: `sha256:${createHashHex(Buffer.from(`profile-${seed}`))}`,
    epoch: opts.epoch ?? 1_700_000_000,
    artifacts,
    slots: { rootSize: 536_870_912 },
    timings: { squashfs: 12, disk: 34 },
    ...opts.extra,
  };
  writeFileSync(join(dir, 'build.json'), `${JSON.stringify(buildJson, null, 2)}\n`);
  return { dir, files, buildJson };
}

function createHashHex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** A minimal static ELF header for another architecture, standing in for its busybox in tests. */
export function fakeStaticElf(machine: number): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32BE(0x7f454c46, 0);
  b[4] = 2; // 64-bit
  b[5] = 1; // little endian
  b[6] = 1;
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(machine, 18);
  b.writeUInt32LE(1, 20);
  b.writeUInt16LE(64, 52);
  b.writeUInt16LE(56, 54); // e_phentsize, e_phnum 0: no PT_INTERP
  return b;
}

/** The host's /bin/busybox, which must be Debian's busybox-static (it goes into test images). */
export function hostBusybox(): Buffer {
  requireTool('busybox', 'busybox-static');
  let bytes: Buffer;
  try {
    bytes = readFileSync('/bin/busybox');
  } catch {
    throw new Error('test input /bin/busybox is missing: apt-get install busybox-static');
  }
  try {
    assertStaticElf(bytes, '/bin/busybox');
  } catch {
    throw new Error('/bin/busybox is not a static busybox: apt-get install busybox-static');
  }
  return bytes;
}
