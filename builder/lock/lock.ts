import { basename, dirname } from 'node:path';
import { inputKind, inputOrigin } from '../inputs/index.ts';
import type { InputContext } from '../inputs/types.ts';
import type { LoadedProfile } from '../profile/load.ts';
import type { Input } from '../profile/schema.ts';
import { InputError } from '../util/errors.ts';
import { lockFileFor, readLock, renderLock, writeLock, type LockEntry, type LockFile } from './file.ts';
import { LockPins, mapPinPaths } from './pins.ts';
import { keyText, lockPath, profileInputs, sourceKey } from './sources.ts';
import type { Pin } from './types.ts';

/** Resolves one input to its pin from metadata only: apt records, registry manifests, file hashes. */
export async function resolvePin(input: Input, ctx: InputContext): Promise<Pin | undefined> {
  return inputKind(input).lock?.resolve(input, ctx);
}

export interface LockOptions {
  /** Re-resolve every source, not only those the existing lock lacks. */
  update?: boolean;
  cacheDir: string;
  log?: (line: string) => void;
  registry?: InputContext['registry'];
}

export interface LockResult {
  file: string;
  lock: LockFile;
  /** Sources resolved now (the rest were kept from the existing lock). */
  resolved: number;
  /** Whether the file's bytes changed. */
  changed: boolean;
}

/**
 * `ossify lock`: pins every fetched input of the profile. Without `update`, sources the
 * existing lock already pins keep their pins (like `cargo generate-lockfile` vs
 * `cargo update`), so locking after adding one package changes only that package.
 */
export async function lockProfile(loaded: LoadedProfile, opts: LockOptions): Promise<LockResult> {
  const file = lockFileFor(loaded.file);
  const dir = dirname(loaded.file);
  const previous = opts.update ? undefined : await readLock(file);
  const old = new Map((previous?.entries ?? []).map((e) => [keyText(e.source), e.pin]));
  const ctx: InputContext = {
    cacheDir: opts.cacheDir,
    arch: loaded.profile.arch,
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  };
  const entries = new Map<string, LockEntry>();
  let resolved = 0;
  for (const { at, input } of profileInputs(loaded.profile)) {
    const key = sourceKey(input, dir, loaded.profile.arch);
    if (!key) continue;
    const k = keyText(key);
    const have = entries.get(k);
    if (have) {
      have.usedBy.push(at);
      continue;
    }
    let pin = old.get(k);
    if (!pin) {
      opts.log?.(`resolving ${inputOrigin(input)}`);
      pin = mapPinPaths((await resolvePin(input, ctx))!, (p) => lockPath(p, dir));
      resolved++;
    }
    entries.set(k, { source: key, usedBy: [at], pin });
  }
  const lock: LockFile = { profile: basename(loaded.file), entries: [...entries.values()] };
  const before = await readLock(file).catch(() => undefined);
  const changed = !before || renderLock(before) !== renderLock(lock);
  if (changed) await writeLock(file, lock);
  return { file, lock, resolved, changed };
}

/**
 * The lock a build follows: the file next to the profile, when there is one. `frozen`
 * requires it to exist and to match the profile exactly, checked before the build starts.
 */
export async function openLock(loaded: LoadedProfile, frozen: boolean): Promise<LockPins | undefined> {
  const file = lockFileFor(loaded.file);
  const lock = await readLock(file);
  if (!lock) {
    if (frozen) {
      throw new InputError(`--frozen: there is no lock file ${file}`, { hint: `create it with \`ossify lock ${loaded.file}\`` });
    }
    return undefined;
  }
  const pins = new LockPins(file, lock, loaded, frozen);
  if (frozen) await pins.assertMatches(lock);
  return pins;
}
