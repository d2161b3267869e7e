import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { DebPackagePin } from './pins.ts';
import { canonicalJson, sha256Hex } from '../util/hash.ts';

/**
 * What `apt-cache show` answers depends on the package lists and apt's configuration only;
 * their names, sizes and times stand for them, so an unpinned `deb:` input is resolved once
 * per `apt-get update` rather than once per build (each `apt-cache` call loads apt's whole
 * index: most of a second).
 */
export async function aptFingerprint(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const h = createHash('sha256');
  h.update(`APT_CONFIG=${env.APT_CONFIG ?? ''}\n`);
  const add = async (path: string) => {
    const st = await stat(path).catch(() => undefined);
    h.update(`${path}\0${st ? `${st.size}:${st.mtimeMs}` : '-'}\n`);
  };
  for (const d of ['/var/lib/apt/lists', '/etc/apt/sources.list.d', '/etc/apt/preferences.d', '/etc/apt/apt.conf.d']) {
    for (const n of (await readdir(d).catch(() => [] as string[])).sort()) await add(join(d, n));
  }
  for (const f of ['/etc/apt/sources.list', '/etc/apt/preferences', '/var/lib/dpkg/status', '/var/lib/dpkg/arch']) await add(f);
  return h.digest('hex');
}

let aptPrint: Promise<string> | undefined;

/** Resolutions under way in this process, so one input named twice (busybox) asks apt once. */
const resolving = new Map<string, Promise<DebPackagePin[]>>();
let tmpCounter = 0;

function isPins(v: unknown): v is DebPackagePin[] {
  return (
    Array.isArray(v) &&
    v.every((p) => {
      const r = p as Record<string, unknown>;
      return typeof r.sha256 === 'string' && typeof r.package === 'string' && (typeof r.file === 'string' || (typeof r.version === 'string' && typeof r.architecture === 'string'));
    })
  );
}

/**
 * `resolve()` (apt's answer for a `deb:` input) through a memo in `dir`, keyed by `key` and
 * apt's state. The memo only saves time: a missing, unreadable or foreign file is resolved
 * again, and a failed write is ignored.
 */
export async function memoDebResolution(dir: string, key: unknown, resolve: () => Promise<DebPackagePin[]>): Promise<DebPackagePin[]> {
  aptPrint ??= aptFingerprint();
  const path = join(dir, 'resolve-v2', `${sha256Hex(canonicalJson({ key, apt: await aptPrint }))}.json`);
  let p = resolving.get(path);
  if (!p) {
    p = (async () => {
      try {
        const memo = JSON.parse(await readFile(path, 'utf8')) as unknown;
        if (isPins(memo)) return memo;
      } catch {
        /* not resolved yet on this machine */
      }
      const pins = await resolve();
      try {
        await mkdir(dirname(path), { recursive: true });
        const tmp = `${path}.${process.pid}-${tmpCounter++}.tmp`;
        await writeFile(tmp, JSON.stringify(pins));
        await rename(tmp, path);
      } catch {
        /* only a memo: the next build asks apt again */
      }
      return pins;
    })();
    resolving.set(path, p);
    p.finally(() => resolving.delete(path)).catch(() => {});
  }
  return p;
}
