import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import { writeFileAtomic } from '../util/atomic.ts';
import { InputError } from '../util/errors.ts';
import type { Pin, SourceKey } from './types.ts';

export const LOCK_VERSION = 1;

const sha256 = z.string().regex(/^[0-9a-f]{64}$/);
const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/);
const DebPackage = z.union([
  z.strictObject({ package: z.string(), version: z.string(), architecture: z.string(), sha256, filename: z.string().optional() }),
  z.strictObject({ file: z.string(), package: z.string(), version: z.string().optional(), sha256 }),
]);
const Source = z.union([
  // arch (Debian's): absent in lock files older than arm64 builds; such entries match no input and are resolved again.
  z.strictObject({ deb: z.array(z.string()).min(1), depends: z.union([z.boolean(), z.array(z.string())]), arch: z.string().optional() }),
  z.strictObject({ oci: z.string(), platform: z.string() }),
  z.strictObject({ tar: z.string() }),
]);
const Entry = z.union([
  z.strictObject({ source: Source, usedBy: z.array(z.string()), deb: z.array(DebPackage).min(1) }),
  z.strictObject({ source: Source, usedBy: z.array(z.string()), oci: z.strictObject({ manifest: digest, index: digest.optional() }) }),
  z.strictObject({ source: Source, usedBy: z.array(z.string()), tar: z.strictObject({ sha256 }) }),
]);
const LockSchema = z.strictObject({ lockVersion: z.literal(LOCK_VERSION), profile: z.string(), sources: z.array(Entry) });

export interface LockEntry {
  source: SourceKey;
  usedBy: string[];
  /** Paths inside (deb files) are as written in the file: relative to the profile's directory. */
  pin: Pin;
}

export interface LockFile {
  /** The profile file the lock belongs to (its name only). */
  profile: string;
  entries: LockEntry[];
}

/** `profiles/site.yaml` → `profiles/site.lock.yaml`. */
export function lockFileFor(profileFile: string): string {
  return join(dirname(profileFile), `${basename(profileFile).replace(/\.ya?ml$/i, '')}.lock.yaml`);
}

export async function readLock(path: string): Promise<LockFile | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new InputError(`cannot read the lock file ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parse(text);
  } catch (err) {
    throw new InputError(`the lock file ${path} is not valid YAML: ${(err as Error).message}`, { hint: 'regenerate it with `ossify lock --update`' });
  }
  const r = LockSchema.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new InputError(`the lock file ${path} is malformed at ${issue.path.join('.') || 'the top'}: ${issue.message}`, {
      hint: 'it is written by `ossify lock`; regenerate it with `ossify lock --update` rather than editing it',
    });
  }
  return {
    profile: r.data.profile,
    entries: r.data.sources.map(({ source, usedBy, ...pin }) => ({ source: source as SourceKey, usedBy, pin: pin as Pin })),
  };
}

export function renderLock(lock: LockFile): string {
  const doc = {
    lockVersion: LOCK_VERSION,
    profile: lock.profile,
    sources: lock.entries.map((e) => ({ source: e.source, usedBy: e.usedBy, ...e.pin })),
  };
  return [
    `# ossify lock file for ${lock.profile}: every fetched input pinned to an exact version and digest.`,
    '# Written by `ossify lock` (`--update` re-resolves); `ossify build` follows it, `--frozen` insists on it.',
    stringify(doc, { lineWidth: 0 }),
  ].join('\n');
}

export async function writeLock(path: string, lock: LockFile): Promise<void> {
  await writeFileAtomic(path, renderLock(lock));
}
