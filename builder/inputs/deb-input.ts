import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { LockSha256, type DebArchivePin, type DebFilePin, type DebPackagePin } from './pins.ts';
import type { DebInput } from '../profile/schema.ts';
import { FileTree } from '../tree/tree.ts';
import { archInfo, DEFAULT_ARCH } from '../arch.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { sha256Hex } from '../util/hash.ts';
import { applyTree } from './apply.ts';
import { aptShowMany, dependencyNames, fetchDeb, type AptPackage } from './apt.ts';
import { BlobCache } from './cache.ts';
import { readDebControl, unpackDeb } from './deb.ts';
import { memoDebResolution } from './deb-resolve-memo.ts';
import { globMatcher } from './glob.ts';
import type { InputContext, LoadedInput, SourceRecord } from './types.ts';
import type { InputKind } from './kind.ts';
import type { PathSegment } from '../profile/errors.ts';

type DebSpec = z.infer<typeof DebInput>;

/** A `deb:` value is a path when it looks like one; otherwise it names a package. */
export function isDebPath(spec: string): boolean {
  return spec.includes('/') || spec.endsWith('.deb');
}

const debSpecs = (input: DebSpec): string[] => (Array.isArray(input.deb) ? input.deb : [input.deb]);

export function debOrigin(input: DebSpec): string {
  return `deb:${Array.isArray(input.deb) ? input.deb.join(',') : input.deb}`;
}

type Pending = { path: string } | { spec: string; neededBy?: string };

async function readDebFile(path: string): Promise<Uint8Array> {
  return readFile(path).catch((err: NodeJS.ErrnoException) => {
    throw new InputError(`deb:${path}: cannot read the package: ${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)}`, { cause: err });
  });
}

/** The Debian architecture packages are fetched for: the profile's (uname -m). */
export function debArch(arch: string | undefined): string {
  return archInfo(arch ?? DEFAULT_ARCH).deb;
}

/** What decides a `deb:` input's resolution: the memo key the stage keys (cache/identity.ts) share. */
export function debResolutionKey(input: Pick<DebSpec, 'deb' | 'depends'>, arch: string | undefined): unknown {
  return { deb: input.deb, depends: input.depends, arch: debArch(arch) };
}

/**
 * Which packages a `deb:` input stands for, in layering order, from metadata only (apt's
 * records, a local file's control): the packages named first, then, as `depends` asks,
 * their dependencies breadth-first (first alternative of each clause), all of Debian
 * architecture `arch` (or `all`). The order depends only on the profile and the archive's
 * metadata. This is what a lock file records.
 */
export async function resolveDebInput(input: DebSpec, arch: string): Promise<DebPackagePin[]> {
  const specs = debSpecs(input);
  const follow =
    input.depends === true ? () => true : input.depends === false || input.depends.length === 0 ? () => false : globMatcher(input.depends);
  const out: DebPackagePin[] = [];
  const seen = new Set<string>();
  const queue: Pending[] = specs.map((s) => (isDebPath(s) ? { path: s } : { spec: s }));
  const known = new Map<string, AptPackage>();
  while (queue.length) {
    const next = queue.shift()!;
    let deps: string[];
    if ('path' in next) {
      const bytes = await readDebFile(next.path);
      const control = await readDebControl(bytes, `deb:${next.path}`);
      const name = control['Package'] ?? basename(next.path);
      if (seen.has(name)) continue;
      seen.add(name);
      const version = control['Version'];
      out.push({ file: next.path, package: name, ...(version ? { version } : {}), sha256: sha256Hex(bytes) });
      deps = dependencyNames(control);
    } else {
      if (!known.has(next.spec)) {
        // Ask apt about everything queued by name at once: same order, one index load.
        const batch = [next, ...queue].filter((q): q is Extract<Pending, { spec: string }> => 'spec' in q && !known.has(q.spec) && !seen.has(q.spec));
        const unique = [...new Map(batch.map((q) => [q.spec, q])).values()];
        const pkgs = await aptShowMany(unique.map((q) => ({ spec: q.spec, ...(q.neededBy ? { neededBy: q.neededBy } : {}) })), arch);
        unique.forEach((q, i) => known.set(q.spec, pkgs[i]!));
      }
      const pkg = known.get(next.spec)!;
      if (seen.has(pkg.name)) continue;
      seen.add(pkg.name);
      out.push({ package: pkg.name, version: pkg.version, architecture: pkg.architecture, sha256: pkg.sha256, ...(pkg.filename ? { filename: pkg.filename } : {}) });
      deps = pkg.depends;
    }
    const by = out[out.length - 1]!.package;
    for (const dep of deps) if (!seen.has(dep) && follow(dep)) queue.push({ spec: dep, neededBy: by });
  }
  return out;
}

const isFilePin = (p: DebPackagePin): p is DebFilePin => 'file' in p;

/** A pinned local .deb that no longer hashes to its pin, or undefined when all still match. */
async function changedFile(pins: DebPackagePin[]): Promise<string | undefined> {
  for (const p of pins.filter(isFilePin)) {
    const actual = sha256Hex(await readDebFile(p.file));
    if (actual !== p.sha256) return `${p.file} has sha256 ${actual}, the lock says ${p.sha256}`;
  }
  return undefined;
}

async function fetchPinned(p: DebArchivePin, cache: BlobCache, ctx: InputContext, locked: boolean): Promise<Uint8Array> {
  try {
    const path = await fetchDeb({ name: p.package, version: p.version, architecture: p.architecture, filename: p.filename ?? '', sha256: p.sha256, depends: [] }, cache, ctx.log);
    return await readFile(path);
  } catch (err) {
    if (!locked || !(err instanceof OssifyError) || err.hint) throw err;
    throw new OssifyError(err.message, { cause: err, hint: `the lock file pins ${p.package} ${p.version}; if the archive no longer has it, run \`ossify lock --update\`` });
  }
}

/**
 * Loads a `deb:` input: as its lock pin says when there is one (no apt metadata is read
 * then, and a warm cache needs no network), else as resolved now. Packages are unpacked
 * in order onto one tree, parent directories found through earlier packages' symlinks.
 */
export async function loadDebInput(input: DebSpec, ctx: InputContext): Promise<LoadedInput> {
  const pin = ctx.lock?.pin(input);
  let pins: DebPackagePin[] | undefined = pin && 'deb' in pin ? pin.deb : undefined;
  if (pins) {
    const why = await changedFile(pins);
    if (why) {
      ctx.lock!.stale(input, why);
      pins = undefined;
    }
  }
  const arch = debArch(ctx.arch);
  const locked = pins !== undefined;
  // Local .deb files are read anyway; packages by name are resolved once per apt state.
  const named = debSpecs(input).every((s) => !isDebPath(s));
  // The key and directory are the stage keys' (cache/identity.ts), so one apt answer serves both.
  pins ??= named ? await memoDebResolution(join(ctx.cacheDir, 'stages'), debResolutionKey(input, ctx.arch), () => resolveDebInput(input, arch)) : await resolveDebInput(input, arch);

  const cache = new BlobCache(ctx.cacheDir);
  const tree = new FileTree();
  const sources: SourceRecord[] = [];
  // Packages are fetched one at a time (apt-get runs are not made concurrent), unpacked
  // concurrently as they arrive (xz decodes on worker threads), and layered in pin order.
  let fetched: Promise<unknown> = Promise.resolve();
  const unpacking = pins.map(async (p) => {
    const origin = isFilePin(p) ? `deb:${p.file}` : `deb:${p.package}`;
    const turn = fetched.catch(() => {}).then(() => (isFilePin(p) ? readDebFile(p.file) : fetchPinned(p, cache, ctx, locked)));
    fetched = turn;
    return { origin, unpacked: await unpackDeb(await turn, origin) };
  });
  for (const u of unpacking) u.catch(() => {});
  for (const [i, p] of pins.entries()) {
    const { origin, unpacked } = await unpacking[i]!;
    applyTree(tree, unpacked.tree, origin);
    sources.push({ kind: 'deb', name: p.package, ...(p.version ? { version: p.version } : {}), sha256: p.sha256 });
    ctx.log?.(`deb ${p.package}${p.version ? ` ${p.version}` : ''}: unpacked`);
  }
  return { tree, sources, pin: { deb: pins } };
}
const pinSummary = (pins: DebPackagePin[]) => pins.map((p) => ({ package: p.package, version: p.version, sha256: p.sha256 }));

/** `deb:`: packages from the archive or .deb files, pinned by version and sha256. */
export const debKind: InputKind<DebSpec> = {
  origin: debOrigin,
  load: (input, ctx) => loadDebInput(input, ctx),
  mapPaths(input, at, fn) {
    const one = (v: string, p: PathSegment[]) => (isDebPath(v) ? fn(v, p) : v);
    const deb = Array.isArray(input.deb) ? input.deb.map((v, i) => one(v, [...at, 'deb', i])) : one(input.deb, [...at, 'deb']);
    return { ...input, deb };
  },
  lock: {
    key: (input, arch, relative) => ({ deb: debSpecs(input).map((s) => (isDebPath(s) ? relative(s) : s)), depends: input.depends, arch: debArch(arch) }),
    resolve: async (input, ctx) => ({ deb: await resolveDebInput(input, debArch(ctx.arch)) }),
    localFiles: (pin, _source, absolute) => ('deb' in pin ? pin.deb.filter(isFilePin).map((p) => ({ file: absolute(p.file), sha256: p.sha256 })) : []),
    mapPinPaths: (pin, fn) => ('deb' in pin ? { deb: pin.deb.map((p) => (isFilePin(p) ? { ...p, file: fn(p.file) } : p)) } : pin),
    schema: {
      // arch (Debian's): absent in lock files older than arm64 builds; such entries match no input and are resolved again.
      source: z.strictObject({ deb: z.array(z.string()).min(1), depends: z.union([z.boolean(), z.array(z.string())]), arch: z.string().optional() }),
      pin: z
        .array(
          z.union([
            z.strictObject({ package: z.string(), version: z.string(), architecture: z.string(), sha256: LockSha256, filename: z.string().optional() }),
            z.strictObject({ file: z.string(), package: z.string(), version: z.string().optional(), sha256: LockSha256 }),
          ]),
        )
        .min(1),
    },
  },
  // The lock's pins, else a memo keyed by apt's state, else apt; the key is the identified
  // input's (local .deb files stand for their content), shared with loadDebInput's memo.
  async resolution(input, identified, ctx) {
    const pin = ctx.lock?.pin(input);
    if (pin && 'deb' in pin) return pinSummary(pin.deb);
    const key = debResolutionKey({ deb: identified.deb, depends: input.depends }, ctx.arch);
    return pinSummary(await memoDebResolution(ctx.memoDir ?? join(ctx.cacheDir, 'stages'), key, () => resolveDebInput(input, debArch(ctx.arch))));
  },
};
