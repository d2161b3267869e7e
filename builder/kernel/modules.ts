import { bytesContent, readContent, type Content } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { decompressToBytes } from '../inputs/decompress.ts';
import { ElfError, readModinfo } from './elf.ts';
import { modulesDirOf } from './find.ts';

export interface PlannedModule {
  /** Canonical module name: `-` folded to `_`, as the kernel names it. */
  name: string;
  /** Where the module sits in the kernel input tree (possibly compressed). */
  source: string;
  /** Path in the initramfs, relative to its root, always uncompressed (`….ko`). */
  path: string;
  /** The uncompressed module. */
  content: Content;
  /** Direct dependencies (canonical names), as recorded in `.modinfo`. */
  depends: string[];
}

export interface ModulePlan {
  kernelVersion: string;
  /** Load order: every module after its dependencies. */
  modules: PlannedModule[];
  /** Requested modules (or dependencies) that are built into the kernel, so need no loading. */
  builtin: string[];
}

const MODULE_FILE = /^(.+)\.ko(\.xz|\.zst|\.gz)?$/;

export function canonicalModuleName(name: string): string {
  return name.replace(/\.ko(\.xz|\.zst|\.gz)?$/, '').replace(/-/g, '_');
}

function levenshtein(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

function closeMatches(name: string, known: Iterable<string>): string[] {
  const scored: [number, string][] = [];
  for (const k of known) {
    const d = levenshtein(name, k);
    if (d <= Math.max(2, Math.floor(name.length / 4)) || (name.length >= 3 && k.includes(name))) scored.push([d, k]);
  }
  return scored
    .sort((x, y) => x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0))
    .slice(0, 5)
    .map(([, k]) => k);
}

/** Every module file under `<modulesDir>/kernel/`, by canonical name. */
function indexModules(tree: FileTree, modulesDir: string): Map<string, string> {
  const index = new Map<string, string>();
  const prefix = `${modulesDir}/kernel/`;
  for (const [path, e] of tree.walk()) {
    if (!path.startsWith(prefix) || e.type === 'dir') continue;
    const m = MODULE_FILE.exec(path.slice(path.lastIndexOf('/') + 1));
    if (!m) continue;
    const name = canonicalModuleName(m[1]!);
    const prev = index.get(name);
    // Two files for one module name (e.g. .ko and .ko.xz): keep the byte-order first, so it is stable.
    if (prev === undefined || path < prev) index.set(name, path);
  }
  return index;
}

async function builtinModules(tree: FileTree, modulesDir: string): Promise<Set<string>> {
  const e = tree.resolve(`${modulesDir}/modules.builtin`);
  if (e?.type !== 'file') return new Set();
  const text = new TextDecoder().decode(await readContent(e.content));
  return new Set(
    text
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => canonicalModuleName(l.slice(l.lastIndexOf('/') + 1))),
  );
}

/**
 * The modules an initramfs must load for `wanted`, with their dependency closure from each
 * module's `.modinfo` `depends=`, in load order: depth-first, dependencies sorted by name,
 * requested modules in the order given. Compressed modules are decompressed, because
 * busybox `insmod` passes the file to `init_module` as-is.
 */
export async function resolveModules(tree: FileTree, version: string, wanted: string[]): Promise<ModulePlan> {
  const modulesDir = modulesDirOf(tree, version);
  const plan: ModulePlan = { kernelVersion: version, modules: [], builtin: [] };
  if (wanted.length === 0) return plan;
  if (tree.get(modulesDir)?.type !== 'dir') {
    throw new InputError(`kernel ${version}: no ${modulesDir} in the kernel input, but modules were requested: ${wanted.join(', ')}`);
  }
  const index = indexModules(tree, modulesDir);
  const builtin = await builtinModules(tree, modulesDir);

  const placed = new Map<string, PlannedModule>();
  const visiting = new Set<string>();

  const load = async (name: string): Promise<{ module: PlannedModule; bytes: Uint8Array }> => {
    const source = index.get(name)!;
    const e = tree.resolve(source);
    if (e?.type !== 'file') throw new InputError(`kernel ${version}: module ${source} is not a regular file`);
    const raw = await readContent(e.content);
    const bytes = MODULE_FILE.exec(source)![2] ? await decompressToBytes(raw, source) : raw;
    let info: Map<string, string[]>;
    try {
      info = readModinfo(bytes);
    } catch (err) {
      if (err instanceof ElfError) throw new InputError(`kernel ${version}: ${source}: ${err.message}`);
      throw err;
    }
    const vermagic = info.get('vermagic')?.[0] ?? '';
    if (vermagic.split(' ')[0] !== version) {
      throw new InputError(`kernel ${version}: ${source} was built for kernel ${JSON.stringify(vermagic.split(' ')[0] ?? '')}`);
    }
    const depends = (info.get('depends')?.[0] ?? '')
      .split(',')
      .filter(Boolean)
      .map(canonicalModuleName);
    const path = source.replace(/\.(xz|zst|gz)$/, '').replace(new RegExp(`^${escapeRe(modulesDir)}/`), `lib/modules/${version}/`);
    return { module: { name, source, path, content: bytesContent(bytes, source), depends }, bytes };
  };

  const visit = async (name: string, chain: string[]): Promise<void> => {
    if (placed.has(name)) return;
    if (builtin.has(name)) {
      if (!plan.builtin.includes(name)) plan.builtin.push(name);
      return;
    }
    if (visiting.has(name)) throw new InputError(`kernel ${version}: module dependency cycle: ${[...chain, name].join(' -> ')}`);
    if (!index.has(name)) {
      if (chain.length) {
        throw new InputError(`kernel ${version}: module ${chain[chain.length - 1]} depends on ${name}, which the kernel input does not have`);
      }
      const near = closeMatches(name, [...index.keys(), ...builtin]);
      throw new InputError(
        `kernel ${version}: no module named ${JSON.stringify(name)}${near.length ? ` (close matches: ${near.join(', ')})` : ''}`,
        { hint: `module names are .ko file names under ${modulesDir}/kernel/ ('-' and '_' are the same)` },
      );
    }
    visiting.add(name);
    const { module } = await load(name);
    for (const dep of [...module.depends].sort()) await visit(dep, [...chain, name]);
    visiting.delete(name);
    placed.set(name, module);
    plan.modules.push(module);
  };

  for (const w of wanted) await visit(canonicalModuleName(w), []);
  return plan;
}

function escapeRe(s: string): string {
  return s.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
}
