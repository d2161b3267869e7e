import { readFile, realpath } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { InputError } from '../util/errors.ts';
import { portablePath, profileDigest } from './digest.ts';
import { ProfileError, toProfileIssues, type RawIssue, type SourcePos } from './errors.ts';
import { mergeNodes, type ReplacePolicy } from './merge.ts';
import { mapLocalPaths } from './paths.ts';
import { MAX_EPOCH, Profile } from './schema.ts';
import { objectUnionAt } from './schema-walk.ts';
import { nodeAt, parseLocatedYaml, toPlain, type LMap, type LNode } from './yaml-positions.ts';
import { explainZodIssues } from './zod-issues.ts';

export interface LoadedProfile {
  /** The profile file, absolute. */
  file: string;
  /** Validated, defaults and `extends` applied, local paths absolute, `epoch` the effective one. */
  profile: Profile;
  /** sha256:… of the resolved profile; see digest.ts for what it does and does not cover. */
  digest: string;
  /**
   * fleet: the digest of the profile without its `site` data: what the OS artifacts
   * of a site build (rootfs, kernel, initramfs, the disk around the site seed) derive from, so
   * every site of one base gets the same bytes. Equal to `digest` when there is no `site`.
   */
  baseDigest?: string;
  /** SOURCE_DATE_EPOCH when set, else the profile's epoch. */
  epoch: number;
  /** Absolute paths of the files read, following `extends` from the top profile: [top, its parent, …]. */
  chain: string[];
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** What a relative `file` and the paths in messages are relative to; process.cwd() by default. */
  cwd?: string;
}

interface ChainFile {
  file: string;
  /** The file's mapping without its `extends` key, which is spent once followed. */
  root: LMap;
}

export async function loadProfile(file: string, opts: LoadOptions = {}): Promise<LoadedProfile> {
  const cwd = opts.cwd ?? process.cwd();
  const override = sourceDateEpoch(opts.env ?? process.env);
  const top = resolve(cwd, file);
  // Paths in messages read the way the user wrote the argument: absolute stays absolute.
  const display = (abs: string) => (isAbsolute(file) ? abs : relative(cwd, abs) || '.');

  const { files, issues } = await readChain(top, display);
  const rank = (f: string) => {
    const i = files.findIndex((c) => c.file === f);
    return i < 0 ? files.length : i;
  };
  if (issues.length > 0) throw new ProfileError(toProfileIssues(issues, display, rank));

  // Base first, so each more specific file merges over what it extends.
  let merged: LNode = files[files.length - 1]!.root;
  for (let i = files.length - 2; i >= 0; i--) merged = mergeNodes(merged, files[i]!.root, replaceOtherKindOfInput);

  const result = Profile.safeParse(toPlain(merged));
  if (!result.success) throw new ProfileError(toProfileIssues(explainZodIssues(result.error.issues, merged, Profile), display, rank));

  const { $schema: _schema, extends: _extends, ...parsed } = result.data;
  const epoch = override ?? parsed.epoch;
  const resolved: Profile = { ...parsed, epoch };
  // A value inherited from a parent profile is relative to the parent's file; a default to the top's.
  const declaredIn = (path: (string | number)[]) => nodeAt(merged, path)?.pos.file ?? top;
  const profile = mapLocalPaths(resolved, (v, p) => resolve(dirname(declaredIn(p)), v));
  const portable = mapLocalPaths(resolved, (v, p) => portablePath(v, declaredIn(p), dirname(top)));
  const digest = profileDigest(portable);
  return { file: top, profile, digest, baseDigest: resolved.site ? siteBaseDigest(resolved, declaredIn) : digest, epoch, chain: files.map((f) => f.file) };
}

/**
 * fleet: a site profile's base digest. Local paths are taken relative to the file
 * that declared them (not to the site profile), so a site that `extends` a base profile and
 * adds only `site:` gets exactly the digest that base profile has when built on its own: the
 * sites' OS artifacts and installer payload are then the base's, byte for byte.
 */
function siteBaseDigest(resolved: Profile, declaredIn: (path: (string | number)[]) => string): string {
  const { site: _site, ...base } = resolved;
  return profileDigest(mapLocalPaths(base, (v, p) => portablePath(v, declaredIn(p), dirname(declaredIn(p)))));
}

/**
 * SOURCE_DATE_EPOCH per reproducible-builds.org: whole seconds since 1970; a malformed value
 * is an error rather than silently ignored. An empty value counts as unset, because CI
 * templates commonly export a variable whose value is empty.
 */
export function sourceDateEpoch(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.SOURCE_DATE_EPOCH;
  if (raw === undefined || raw === '') return undefined;
  if (!/^[0-9]+$/.test(raw) || Number(raw) > MAX_EPOCH) {
    throw new InputError(`SOURCE_DATE_EPOCH=${JSON.stringify(raw)} is not a valid timestamp`, {
      hint: `set it to whole seconds since 1970-01-01 UTC, at most ${MAX_EPOCH} (e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)), or unset it`,
    });
  }
  return Number(raw);
}

/**
 * A child that switches an input to another kind (deb → dir) means a different input; merging
 * key by key would yield one with both keys, which no schema member accepts.
 */
const replaceOtherKindOfInput: ReplacePolicy = (path, parent, child) => {
  const union = objectUnionAt(Profile, path);
  if (!union || parent.kind !== 'map' || child.kind !== 'map') return false;
  const kinds = (n: LMap) => [...n.entries.keys()].filter((k) => union.discriminators.has(k)).sort().join(',');
  const c = kinds(child);
  return c !== '' && c !== kinds(parent);
};

async function readChain(top: string, display: (abs: string) => string): Promise<{ files: ChainFile[]; issues: RawIssue[] }> {
  const files: ChainFile[] = [];
  const issues: RawIssue[] = [];
  // Real paths, so a cycle through symlinks is still seen as one.
  const seen: string[] = [];
  let current = top;
  let via: SourcePos | undefined;
  for (;;) {
    let text: string;
    try {
      text = await readFile(current, 'utf8');
    } catch (err) {
      const why = readFailure(err);
      if (via === undefined) issues.push({ file: current, path: [], message: `cannot read profile: ${why}`, hint: 'check the path to the profile file' });
      else
        issues.push({
          pos: via,
          path: ['extends'],
          message: `cannot read extended profile ${JSON.stringify(display(current))}: ${why}`,
          hint: `extends is relative to the file that says it (${display(dirname(via.file))}); fix the path or create the file`,
        });
      break;
    }
    seen.push(await realpath(current).catch(() => current));
    const parsed = parseLocatedYaml(text, current);
    issues.push(...parsed.issues);
    if (parsed.root === undefined) break;
    if (parsed.root.kind !== 'map') {
      issues.push({ pos: parsed.root.pos, path: [], message: `a profile must be a mapping of keys to values, got ${parsed.root.kind === 'seq' ? 'a list' : 'a single value'}`, hint: 'start the file with keys such as name:, version:, kernel:' });
      break;
    }
    const entries = new Map(parsed.root.entries);
    const ext = entries.get('extends');
    entries.delete('extends');
    files.push({ file: current, root: { ...parsed.root, entries } });
    if (ext === undefined) break;
    if (ext.kind !== 'scalar' || typeof ext.value !== 'string' || ext.value === '') {
      issues.push({ pos: ext.pos, path: ['extends'], message: 'expected a file name', hint: 'extends names one profile file, relative to this one, e.g. extends: base.yaml' });
      break;
    }
    const next = resolve(dirname(current), ext.value);
    const nextReal = await realpath(next).catch(() => next);
    const loopStart = seen.indexOf(nextReal);
    if (loopStart >= 0) {
      const loop = [...files.slice(loopStart).map((f) => f.file), next].map(display);
      issues.push({ pos: ext.pos, path: ['extends'], message: `extends cycle: ${loop.join(' → ')}`, hint: `a profile cannot extend itself; remove this extends or point it at a profile that does not lead back to ${display(next)}` });
      break;
    }
    via = ext.pos;
    current = next;
  }
  return { files, issues };
}

function readFailure(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory';
  return err instanceof Error ? err.message : String(err);
}
