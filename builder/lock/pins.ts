import { dirname } from 'node:path';
import { inputOrigin, pinKind } from '../inputs/index.ts';
import type { InputLock } from '../inputs/types.ts';
import type { LoadedProfile } from '../profile/load.ts';
import type { Input } from '../profile/schema.ts';
import { InputError } from '../util/errors.ts';
import { sha256File } from '../util/hash.ts';
import type { LockEntry, LockFile } from './file.ts';
import { absPath, keyText, profileInputs, sourceKey } from './sources.ts';
import type { Pin } from './types.ts';

/** Lock-file paths (relative to the profile) made absolute, or the reverse. */
export function mapPinPaths(pin: Pin, fn: (p: string) => string): Pin {
  return pinKind(pin).lock?.mapPinPaths(pin, fn) ?? pin;
}

const RELOCK = 'run `ossify lock` to record the profile\'s inputs (`ossify lock --update` re-resolves all of them)';

/**
 * A lock file as the build uses it. Unfrozen, the lock is followed where it applies and
 * anything it does not cover is resolved afresh with a warning; frozen (CI), every
 * disagreement is an error, found before anything is fetched or written.
 */
export class LockPins implements InputLock {
  readonly warnings: string[] = [];
  private readonly byKey: Map<string, Pin>;
  private readonly dir: string;

  constructor(
    readonly file: string,
    lock: LockFile,
    private readonly loaded: LoadedProfile,
    readonly frozen: boolean,
  ) {
    this.dir = dirname(loaded.file);
    this.byKey = new Map(lock.entries.map((e) => [keyText(e.source), mapPinPaths(e.pin, (p) => absPath(p, this.dir))]));
  }

  private warn(message: string): void {
    if (!this.warnings.includes(message)) this.warnings.push(message);
  }

  pin(input: Input): Pin | undefined {
    const key = sourceKey(input, this.dir, this.loaded.profile.arch);
    if (!key) return undefined;
    const pin = this.byKey.get(keyText(key));
    if (pin) return pin;
    const message = `${inputOrigin(input)} is not in the lock file ${this.file}`;
    if (this.frozen) throw new InputError(`--frozen: ${message}`, { hint: RELOCK });
    this.warn(`${message}; resolved it now (${RELOCK})`);
    return undefined;
  }

  stale(input: Input, why: string): void {
    const message = `${inputOrigin(input)} disagrees with the lock file ${this.file}: ${why}`;
    if (this.frozen) throw new InputError(`--frozen: ${message}`, { hint: RELOCK });
    this.warn(`${message}; using it as it is now (${RELOCK})`);
  }

  /** The local files an entry pins (absolute), with the sha256 it expects of them. */
  private localFiles(e: LockEntry): { file: string; sha256: string }[] {
    return pinKind(e.pin).lock?.localFiles(e.pin, e.source, (p) => absPath(p, this.dir)) ?? [];
  }

  /**
   * Every way the profile and the lock disagree, as one error: frozen builds check this
   * before anything is fetched or written. Local archives and .deb files are hashed here
   * too, so a changed file is caught up front rather than halfway through a build.
   */
  async assertMatches(lock: LockFile): Promise<void> {
    const wanted = new Map<string, string[]>();
    for (const { at, input } of profileInputs(this.loaded.profile)) {
      const key = sourceKey(input, this.dir, this.loaded.profile.arch);
      if (key) wanted.set(keyText(key), [...(wanted.get(keyText(key)) ?? []), `${at} (${inputOrigin(input)})`]);
    }
    const problems: string[] = [];
    for (const [k, where] of wanted) if (!this.byKey.has(k)) problems.push(`not in the lock: ${where.join(', ')}`);
    for (const e of lock.entries) {
      if (!wanted.has(keyText(e.source))) continue;
      for (const { file, sha256 } of this.localFiles(e)) {
        const actual = await sha256File(file).catch(() => 'unreadable');
        if (actual !== sha256) problems.push(`${file} has sha256 ${actual}, the lock says ${sha256}`);
      }
    }
    for (const e of lock.entries) if (!wanted.has(keyText(e.source))) problems.push(`locked but no longer in the profile: ${keyText(e.source)} (was ${e.usedBy.join(', ')})`);
    if (problems.length) {
      throw new InputError(`--frozen: the profile and its lock file ${this.file} disagree:\n  ${problems.join('\n  ')}`, { hint: RELOCK });
    }
  }
}
