import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import { writeFileAtomic } from '../util/atomic.ts';
import { InputError } from '../util/errors.ts';
import { INPUT_KINDS, type InputKindName } from '../inputs/index.ts';
import type { Pin, SourceKey } from './types.ts';

export const LOCK_VERSION = 1;

type Schemas = [z.ZodType, ...z.ZodType[]];
/** Every kind the lock pins says how it writes its sources and pins. */
const pinned = (Object.keys(INPUT_KINDS) as InputKindName[]).flatMap((name) => {
  const lock = INPUT_KINDS[name].lock;
  return lock ? [{ name, ...lock.schema }] : [];
});
const Source = z.union(pinned.map((k) => k.source) as Schemas);
type EntryShape = { source: SourceKey; usedBy: string[] } & Record<string, unknown>;
const Entry = z.union(pinned.map((k) => z.strictObject({ source: Source, usedBy: z.array(z.string()), [k.name]: k.pin })) as unknown as Schemas) as z.ZodType<EntryShape>;
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
