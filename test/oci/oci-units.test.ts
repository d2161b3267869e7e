import fc from 'fast-check';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { type TarEntry, readTar, writeTar } from '../../builder/formats/tar.ts';
import { bytesContent } from '../../builder/tree/content.ts';
import { InputError } from '../../builder/util/errors.ts';
import { Authenticator, loadDockerCredentials, parseChallenges } from '../../builder/oci/auth.ts';
import { formatReference, isLoopbackRegistry, parseReference } from '../../builder/oci/reference.ts';
import { progressReporter } from '../../builder/oci/progress.ts';
import type { HttpRequest, HttpResponse, Transport } from '../../builder/oci/transport.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

const D = `sha256:${'ab'.repeat(32)}`;
const temps: string[] = [];
const tempDir = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
};
afterAll(() => {
  for (const d of temps) rmSync(d, { recursive: true, force: true });
});

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of it) parts.push(c);
  return Buffer.concat(parts);
}

describe('image references', () => {
  it('splits registry, repository, tag and digest', () => {
    expect(parseReference('127.0.0.1:5000/ossify/os:1.0.0')).toEqual({ registry: '127.0.0.1:5000', repository: 'ossify/os', tag: '1.0.0' });
    expect(parseReference(`localhost/a/b@${D}`)).toEqual({ registry: 'localhost', repository: 'a/b', digest: D });
    expect(parseReference(`reg.example.com:443/x:t@${D}`)).toEqual({ registry: 'reg.example.com:443', repository: 'x', tag: 't', digest: D });
    expect(parseReference('busybox')).toEqual({ registry: 'docker.io', repository: 'library/busybox' });
    expect(parseReference('me/app:v2')).toEqual({ registry: 'docker.io', repository: 'me/app', tag: 'v2' });
    expect(parseReference('[::1]:5000/x')).toEqual({ registry: '[::1]:5000', repository: 'x' });
    expect(formatReference(parseReference(`127.0.0.1:5000/a:b@${D}`))).toBe(`127.0.0.1:5000/a:b@${D}`);
  });

  it('refuses what a registry would refuse, as input errors', () => {
    for (const bad of ['', 'UPPER/case', 'a//b', 'a/b:', 'a/b:-tag', `a@sha256:${'A'.repeat(64)}`, 'a@sha256:abc', 'a b', 'reg:5000/x/Y', `a/${'x'.repeat(256)}`]) {
      expect(() => parseReference(bad), bad).toThrow(InputError);
    }
  });

  it('knows which registries are on this machine', () => {
    expect(isLoopbackRegistry('127.0.0.1:5000')).toBe(true);
    expect(isLoopbackRegistry('127.3.2.1')).toBe(true);
    expect(isLoopbackRegistry('localhost:1')).toBe(true);
    expect(isLoopbackRegistry('[::1]:5000')).toBe(true);
    expect(isLoopbackRegistry('10.0.0.1:5000')).toBe(false);
    expect(isLoopbackRegistry('registry.example')).toBe(false);
  });
});

describe('WWW-Authenticate', () => {
  it('parses a Bearer challenge with quoted, escaped and multi-scope parameters', () => {
    const [c] = parseChallenges('Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull,push repository:b:pull",error="insufficient_scope"');
    expect(c).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.example/token', service: 'reg', scope: 'repository:a:pull,push repository:b:pull', error: 'insufficient_scope' },
    });
    expect(parseChallenges('Basic realm="a \\"b\\""')).toEqual([{ scheme: 'basic', params: { realm: 'a "b"' } }]);
  });

  it('separates several challenges joined into one header', () => {
    const cs = parseChallenges('Basic realm="x", Bearer realm="https://t/token", service=reg');
    expect(cs.map((c) => c.scheme)).toEqual(['basic', 'bearer']);
    expect(cs[1]!.params).toEqual({ realm: 'https://t/token', service: 'reg' });
  });

  it('refuses to send credentials to a plain-HTTP token realm off this machine', async () => {
    const transport: Transport = {
      kind: 'fetch',
      request: async () => {
        throw new Error('must not be called');
      },
      close: async () => {},
    };
    const a = new Authenticator('reg.example', transport, { username: 'u', password: 'p' });
    await expect(a.challenge('Bearer realm="http://auth.example/token",service="s"', [], undefined)).rejects.toThrow(/not HTTPS/);
  });

  it('fetches a token with every scope, caches it per scope set and refreshes it when it expires', async () => {
    let now = 1_000_000;
    const seen: string[] = [];
    const transport: Transport = {
      kind: 'fetch',
      async request(req: HttpRequest): Promise<HttpResponse> {
        seen.push(req.url);
        expect(req.headers?.authorization).toBe(`Basic ${Buffer.from('u:p:w').toString('base64')}`);
        const body = JSON.stringify({ token: `t${seen.length}`, expires_in: 60 });
        return { status: 200, url: req.url, header: () => undefined, body: async function* () {}, text: async () => body, discard: async () => {} };
      },
      close: async () => {},
    };
    const a = new Authenticator('127.0.0.1:1', transport, { username: 'u', password: 'p:w' }, () => now);
    expect(await a.header(['repository:a:pull'])).toBeUndefined();
    expect(await a.challenge('Bearer realm="http://127.0.0.1:9/token",service="svc",scope="repository:b:pull"', ['repository:a:pull,push'], undefined)).toBe(true);
    const u = new URL(seen[0]!);
    expect(u.searchParams.get('service')).toBe('svc');
    expect(u.searchParams.getAll('scope')).toEqual(['repository:a:pull,push', 'repository:b:pull']);
    expect(await a.header(['repository:a:pull,push'])).toBe('Bearer t1');
    expect(a.stats.tokenRequests).toBe(1);
    now += 55_000; // within 10 s of expiry: refreshed before use
    expect(await a.header(['repository:a:pull,push'])).toBe('Bearer t2');
    expect(await a.header(['repository:c:pull'])).toBe('Bearer t3');
  });
});

describe('docker config.json', () => {
  it('reads base64 auth and username/password entries, matching hosts with or without scheme', async () => {
    const dir = tempDir('ossify-dockercfg-');
    writeFileSync(
      join(dir, 'config.json'),
      JSON.stringify({
        auths: {
          'https://127.0.0.1:5000/v2/': { auth: Buffer.from('alice:s3:cret').toString('base64') },
          'localhost:6000': { username: 'bob', password: 'pw' },
          'https://index.docker.io/v1/': { auth: Buffer.from('hub:hubpw').toString('base64') },
        },
      }),
    );
    const env = { DOCKER_CONFIG: dir };
    expect(await loadDockerCredentials('127.0.0.1:5000', { env })).toEqual({ username: 'alice', password: 's3:cret' });
    expect(await loadDockerCredentials('localhost:6000', { env })).toEqual({ username: 'bob', password: 'pw' });
    expect(await loadDockerCredentials('docker.io', { env })).toEqual({ username: 'hub', password: 'hubpw' });
    expect(await loadDockerCredentials('other:1', { env })).toBeUndefined();
    expect(await loadDockerCredentials('x', { env: { HOME: join(dir, 'nohome') } })).toBeUndefined();
    mkdirSync(join(dir, 'home', '.docker'), { recursive: true });
    writeFileSync(join(dir, 'home', '.docker', 'config.json'), '{"auths":{"h:1":{"username":"c","password":"d"}}}');
    expect(await loadDockerCredentials('h:1', { env: { HOME: join(dir, 'home') } })).toEqual({ username: 'c', password: 'd' });
    writeFileSync(join(dir, 'config.json'), '{not json');
    await expect(loadDockerCredentials('x', { env })).rejects.toThrow(InputError);
  });
});

describe('deterministic tar', () => {
  const file = (path: string, data: string | Uint8Array, mode = 0o644): TarEntry => ({
    type: 'file',
    path,
    mode,
    content: bytesContent(typeof data === 'string' ? new TextEncoder().encode(data) : data),
  });

  it('writes ustar that bsdtar lists with fixed owner and mtime, PAX only for long names', async () => {
    requireTool('bsdtar', 'libarchive-tools');
    const long = `${'d'.repeat(120)}/${'f'.repeat(120)}`;
    const tar = await collect(
      writeTar(
        [file('b/z.txt', 'zz'), { type: 'dir', path: 'b', mode: 0o755 }, file('a.bin', new Uint8Array(1000).fill(7), 0o755), { type: 'symlink', path: 'b/link', target: 'z.txt' }, file(long, 'long'), file(`p/${'x'.repeat(99)}`, 'split')],
        { mtime: 1_700_000_000 },
      ),
    );
    expect(tar.length % 512).toBe(0);
    const dir = tempDir('ossify-tar-');
    writeFileSync(join(dir, 't.tar'), tar);
    const listing = runOk('bsdtar', ['-tvf', join(dir, 't.tar')]);
    const lines = listing.trim().split('\n');
    expect(lines.map((l) => l.split(/\s+/).slice(8).join(' '))).toEqual(['a.bin', 'b/', 'b/link -> z.txt', 'b/z.txt', `${long}`, `p/${'x'.repeat(99)}`]);
    for (const l of lines) expect(l).toMatch(/^\S+\s+\d+\s+0\s+0\s/);
    expect(listing).toContain('Nov 14  2023');
    // Exactly one PAX header: the 241-byte name; the 101-byte one fits ustar's prefix field.
    const paxCount = [...tar.toString('latin1').matchAll(/PaxHeaders\//g)].length;
    expect(paxCount).toBe(1);
    runOk('bsdtar', ['-xf', join(dir, 't.tar'), '-C', dir]);
    expect(readFileSync(join(dir, long), 'utf8')).toBe('long');
  });

  it('round-trips arbitrary names, sizes and modes through its own reader', async () => {
    const seg = fc.stringMatching(/^[a-zA-Z0-9._\u00e9\u4e2d -]{1,60}$/).filter((s) => s !== '.' && s !== '..' && s.trim() === s && s.length > 0);
    const arb = fc.uniqueArray(
      fc.record({ parts: fc.array(seg, { minLength: 1, maxLength: 5 }), size: fc.integer({ min: 0, max: 3000 }), mode: fc.constantFrom(0o644, 0o755, 0o600, 0o4755) }),
      { maxLength: 12, selector: (r) => r.parts.join('/') },
    );
    await fc.assert(
      fc.asyncProperty(arb, async (specs) => {
        const paths = new Set(specs.map((s) => s.parts.join('/')));
        // A path cannot be both a file and a parent of another file.
        const files = specs.filter((s) => ![...paths].some((p) => p.startsWith(`${s.parts.join('/')}/`)));
        const entries = files.map((s, i) => file(s.parts.join('/'), new Uint8Array(s.size).fill(i + 1), s.mode));
        const tar = await collect(writeTar(entries, { mtime: 42 }));
        const got: { path: string; mode: number; data: Buffer; mtime: number; uid: number }[] = [];
        for await (const e of readTar((async function* () {
          // Feed in odd chunk sizes to exercise the reader's buffering.
          for (let o = 0; o < tar.length; o += 777) yield tar.subarray(o, o + 777);
        })())) got.push({ path: e.path, mode: e.mode, data: await collect(e.body), mtime: e.mtime, uid: e.uid });
        const want = entries
          .map((e) => ({ path: e.path, mode: (e as { mode: number }).mode, size: (e as { content: { size: number } }).content.size }))
          .sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
        expect(got.map((g) => [g.path, g.mode, g.data.length, g.mtime, g.uid])).toEqual(want.map((w) => [w.path, w.mode, w.size, 42, 0]));
        // Same entries in another order: the same bytes.
        const again = await collect(writeTar([...entries].reverse(), { mtime: 42 }));
        expect(Buffer.compare(again, tar)).toBe(0);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses duplicates, escaping paths and content of the wrong size', async () => {
    await expect(collect(writeTar([file('a', 'x'), file('./a', 'y')], { mtime: 0 }))).rejects.toThrow(/twice/);
    await expect(collect(writeTar([file('../a', 'x')], { mtime: 0 }))).rejects.toThrow(InputError);
    const liar: TarEntry = { type: 'file', path: 'a', mode: 0o644, content: { size: 10, origin: 'liar', stream: async function* () { yield new Uint8Array(3); } } };
    await expect(collect(writeTar([liar], { mtime: 0 }))).rejects.toThrow(/expected 10 bytes/);
  });

  it('rejects a corrupted header', async () => {
    const tar = await collect(writeTar([file('a', 'x')], { mtime: 0 }));
    tar[0] = 0x62;
    await expect(async () => {
      for await (const _ of readTar((async function* () { yield tar; })())) void _;
    }).rejects.toThrow(/checksum/);
  });
});

describe('progress', () => {
  const sink = () => {
    let out = '';
    const s = new Writable({
      write(c, _e, cb) {
        out += String(c);
        cb();
      },
    }) as unknown as NodeJS.WriteStream;
    return { s, out: () => out };
  };

  it('prints plain lines when not on a terminal', () => {
    const { s, out } = sink();
    const p = progressReporter(s, { tty: false, intervalMs: 0 });
    p.onProgress({ type: 'blob-start', op: 'push', repo: 'r', digest: D, size: 3 << 20 });
    p.onProgress({ type: 'blob-progress', op: 'push', repo: 'r', digest: D, size: 3 << 20, done: 1 << 20 });
    p.onProgress({ type: 'blob-done', op: 'push', repo: 'r', digest: D, size: 3 << 20, how: 'uploaded' });
    p.onProgress({ type: 'blob-done', op: 'push', repo: 'r', digest: D, size: 5, how: 'mounted', from: 'other' });
    p.finish();
    expect(out()).not.toContain('\r');
    expect(out()).toMatch(/uploading abababababab \(3\.0 MiB\)\n/);
    expect(out()).toMatch(/pushing 1 blob: 1\.0 MiB \/ 3\.0 MiB {2}[\d.]+ \w+\/s\n/);
    expect(out()).toContain('abababababab: mounted from other\n');
  });

  it('redraws one status line on a terminal', () => {
    const { s, out } = sink();
    const p = progressReporter(s, { tty: true, intervalMs: 0 });
    p.onProgress({ type: 'blob-start', op: 'pull', repo: 'r', digest: D, size: 2048 });
    p.onProgress({ type: 'blob-progress', op: 'pull', repo: 'r', digest: D, size: 2048, done: 1024 });
    p.finish();
    expect(out()).toMatch(/^\r\x1b\[Kpulling 1 blob: 1\.0 KiB \/ 2\.0 KiB/);
    expect(out().endsWith('\r\x1b[K')).toBe(true);
  });
});
