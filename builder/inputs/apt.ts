import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { InputError, MissingToolError, OssifyError } from '../util/errors.ts';
import { sha256File } from '../util/hash.ts';
import { BlobCache, CacheCorruptError } from './cache.ts';
import { parseStanza, type Stanza } from './deb.ts';

/**
 * Debian packages by name through the host's apt: `apt-cache` says which version and
 * which sha256, `apt-get download` fetches it, and the cache keeps it by digest. The host's
 * apt configuration decides the archive; the sha256 pins what was used. Packages are asked
 * for by architecture (`name:arm64`), so a build for another architecture than the host's
 * needs only `dpkg --add-architecture` and `apt-get update`.
 */

export interface AptPackage {
  name: string;
  version: string;
  architecture: string;
  filename: string;
  sha256: string;
  /** Hard dependencies (Pre-Depends, then Depends), first alternative of each, names only. */
  depends: string[];
}

const NAME = /^[a-z0-9][a-z0-9+.-]+$/;
const VERSION = /^[A-Za-z0-9.+~:-]+$/;

/** `name` or `name=version`, validated so no value can be mistaken for an apt option. */
export function parsePackageSpec(spec: string): { name: string; version?: string } {
  const [name, version, ...rest] = spec.split('=');
  if (rest.length || !name || !NAME.test(name) || (version !== undefined && !VERSION.test(version))) {
    throw new InputError(`deb: ${JSON.stringify(spec)} is not a Debian package name (or name=version)`);
  }
  return version === undefined ? { name } : { name, version };
}

/** First alternative of every Pre-Depends/Depends clause, without version or arch qualifiers. */
export function dependencyNames(fields: Stanza): string[] {
  const out: string[] = [];
  for (const field of [fields['Pre-Depends'], fields['Depends']]) {
    if (!field) continue;
    for (const clause of field.split(',')) {
      const first = clause.split('|')[0]!.trim();
      const name = first.split(/[\s(:[<]/)[0]!;
      if (name && !out.includes(name)) out.push(name);
    }
  }
  return out;
}

function toolMissing(err: unknown): boolean {
  return (err as { code?: string }).code === 'ENOENT';
}

export async function aptShow(spec: string, arch: string, neededBy?: string): Promise<AptPackage> {
  return (await aptShowMany([{ spec, ...(neededBy ? { neededBy } : {}) }], arch))[0]!;
}

function unknownPackage(spec: string, arch: string, neededBy: string | undefined, detail: string): InputError {
  return new InputError(
    `deb: unknown package ${JSON.stringify(spec)} for ${arch}${neededBy ? ` (a dependency of ${neededBy})` : ''}${detail ? `: apt-cache says ${JSON.stringify(detail)}` : ''}`,
    {
      hint: `check the name with \`apt-cache search\`, and run \`apt-get update\` if the package lists are stale${
        arch === 'all' ? '' : `; packages of another architecture than the host's need \`dpkg --add-architecture ${arch}\` first`
      }`,
    },
  );
}

/** `apt-cache show` of `name:arch[=version]` specs: its records by package name, or the last line it complained with. */
async function aptCacheShow(args: string[]): Promise<{ records: Map<string, Stanza[]> } | { error: string }> {
  let stdout: string;
  try {
    const { execa } = await import('execa'); // loaded on demand: a locked or memoised build asks apt nothing
    stdout = (await execa('apt-cache', ['show', '--no-all-versions', ...args], { env: { LC_ALL: 'C' } })).stdout;
  } catch (err) {
    if (toolMissing(err)) throw new MissingToolError('apt-cache', 'apt', `needed to resolve the package ${args[0] ?? ''}`);
    return { error: String((err as { stderr?: string }).stderr ?? '').trim().split('\n').filter(Boolean).pop() ?? '' };
  }
  const records = new Map<string, Stanza[]>();
  for (const chunk of stdout.split(/\n(?=Package: )/)) {
    const f = parseStanza(chunk);
    const name = f['Package'];
    if (name) records.set(name, [...(records.get(name) ?? []), f]);
  }
  return { records };
}

/**
 * Several packages of Debian architecture `arch` in one `apt-cache show`: each call loads
 * apt's whole package index (seconds where its binary cache is disabled, as in slim
 * containers), so a dependency walk asks for a whole breadth-first level at once. apt-cache
 * silently skips unknown names when others are found, so each requested name is checked in
 * the answer. A name apt does not know for `arch` is asked again as `name:all`
 * (architecture-independent packages have no `:arm64` candidate).
 */
export async function aptShowMany(specs: { spec: string; neededBy?: string }[], arch: string): Promise<AptPackage[]> {
  const parsed = specs.map((s) => ({ ...s, ...parsePackageSpec(s.spec) }));
  const qualified = (p: (typeof parsed)[number], a: string) => `${p.name}:${a}${p.version ? `=${p.version}` : ''}`;
  const found = new Map<number, Stanza>();
  let complaint = '';
  for (const a of arch === 'all' ? ['all'] : [arch, 'all']) {
    const ask = parsed.map((p, i) => ({ p, i })).filter(({ i }) => !found.has(i));
    if (ask.length === 0) break;
    const r = await aptCacheShow(ask.map(({ p }) => qualified(p, a)));
    if ('error' in r) {
      complaint ||= r.error;
      continue;
    }
    for (const { p, i } of ask) {
      const candidates = (r.records.get(p.name) ?? []).filter((c) => c['Architecture'] === a);
      const f = p.version ? candidates.find((c) => c['Version'] === p.version) : candidates[0];
      if (f) found.set(i, f);
    }
  }
  return parsed.map((p, i) => {
    const f = found.get(i);
    const spec = p.version ? `${p.name}=${p.version}` : p.name;
    if (!f) throw unknownPackage(spec, arch, p.neededBy, parsed.length === 1 ? complaint : '');
    const pkg = {
      name: f['Package'] ?? '',
      version: f['Version'] ?? '',
      architecture: f['Architecture'] ?? '',
      filename: f['Filename'] ?? '',
      sha256: (f['SHA256'] ?? '').toLowerCase(),
      depends: dependencyNames(f),
    };
    if (!pkg.version || !/^[0-9a-f]{64}$/.test(pkg.sha256)) {
      throw new InputError(`deb: apt-cache gave no usable record (Package, Version, SHA256) for ${JSON.stringify(p.name)}`);
    }
    return pkg;
  });
}

interface DebIndexRecord {
  sha256: string;
  package: string;
  version: string;
  architecture: string;
  filename: string;
}

/** The verified cache path of a package's .deb, downloading it on a miss. */
export async function fetchDeb(pkg: AptPackage, cache: BlobCache, log?: (line: string) => void): Promise<string> {
  const key = `${pkg.name}_${pkg.version}_${pkg.architecture}`;
  const rec = await cache.readIndex<DebIndexRecord>('deb', key);
  if (rec && rec.sha256 !== pkg.sha256) {
    const path = cache.indexPath('deb', key);
    throw new CacheCorruptError(
      `cache index ${path} records sha256 ${rec.sha256} for ${pkg.name} ${pkg.version}, but apt says ${pkg.sha256}`,
      path,
    );
  }
  const cached = await cache.verifiedBlob(pkg.sha256);
  if (cached) {
    if (!rec) await cache.writeIndex('deb', key, indexRecord(pkg));
    log?.(`deb ${pkg.name} ${pkg.version}: cached (sha256 ${pkg.sha256.slice(0, 12)})`);
    return cached;
  }

  log?.(`deb ${pkg.name} ${pkg.version}: downloading`);
  const scratch = await cache.scratchDir(`apt-${pkg.name}`);
  try {
    try {
      // Qualified by architecture: unqualified, apt would fetch the host's build of the same version.
      const { execa } = await import('execa');
      await execa('apt-get', ['download', '-q', `${pkg.name}${pkg.architecture ? `:${pkg.architecture}` : ''}=${pkg.version}`], { cwd: scratch, env: { LC_ALL: 'C' } });
    } catch (err) {
      if (toolMissing(err)) throw new MissingToolError('apt-get', 'apt', `needed to download ${pkg.name}`);
      const detail = String((err as { stderr?: string }).stderr ?? '').trim();
      throw new OssifyError(`deb: apt-get download ${pkg.name}=${pkg.version} failed${detail ? `: ${detail}` : ''}`, { cause: err });
    }
    const files = (await readdir(scratch)).filter((f) => f.endsWith('.deb'));
    if (files.length !== 1) throw new OssifyError(`deb: apt-get download ${pkg.name} produced ${files.length} .deb files`);
    const file = join(scratch, files[0]!);
    const actual = await sha256File(file);
    if (actual !== pkg.sha256) {
      throw new OssifyError(`deb: downloaded ${pkg.name} ${pkg.version} has sha256 ${actual}, but the archive index says ${pkg.sha256}`);
    }
    const path = await cache.adopt(file, pkg.sha256);
    await cache.writeIndex('deb', key, indexRecord(pkg));
    return path;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

function indexRecord(pkg: AptPackage): DebIndexRecord {
  return { sha256: pkg.sha256, package: pkg.name, version: pkg.version, architecture: pkg.architecture, filename: pkg.filename };
}
