import { z } from 'zod';
import type { Profile } from '../profile/schema.ts';
import { InputError } from '../util/errors.ts';
import { extraArguments } from './entries.ts';

/**
 * How a release boots, as its build wrote it into disk.raw: one record, written by the build
 * into build.json and release.json (so the installer image carries it), and read by every
 * installer path — `install`, `upgrade` and the on-device script — so a disk installed or
 * upgraded from a registry boots exactly like the build's own disk.
 *
 * - `entries`: Type #1 entries or unified kernel images (the uki-a/b.efi artifacts).
 * - `cmdline`: the profile's kernel arguments besides the ones naming the slot (Type #1
 *   entries' `options` after the slot's own; a UKI has them inside, signed).
 * - `timeout`: loader.conf's menu timeout.
 * - `tries`: boot attempts of a freshly upgraded slot before it falls back (profile
 *   `boot.tries`; `--tries` overrides it).
 * - `secureBoot.enroll`: loader.conf's secure-boot-enroll; the keys it enrols are the
 *   PK.auth, KEK.auth and db.auth artifacts (present exactly when it is not `off`).
 *
 * Parsed loosely: a newer ossify may add keys an older installer does not know.
 */
export const ReleaseBootSchema = z.looseObject({
  entries: z.enum(['type1', 'uki']),
  cmdline: z.string(),
  timeout: z.number().int().min(0),
  tries: z.number().int().min(1).max(9),
  secureBoot: z.looseObject({ enroll: z.enum(['force', 'manual', 'off']) }).optional(),
});
export type ReleaseBoot = z.infer<typeof ReleaseBootSchema>;

/** The record of a profile, as its build lays the disk out. */
export function releaseBootOf(p: Profile, origin: string): ReleaseBoot {
  const cmdline = extraArguments(p.kernel.cmdline);
  // The on-device script reads the record with sed: it undoes \" and \\, nothing else JSON escapes.
  const bad = /[\u0000-\u001f\u007f]/.exec(cmdline);
  if (bad || Buffer.from(cmdline, 'utf8').toString('utf8') !== cmdline) {
    throw new InputError(`${origin}: kernel.cmdline holds ${bad ? `the control character U+${bad[0].charCodeAt(0).toString(16).padStart(4, '0')}` : 'a lone surrogate'}`, {
      hint: 'a kernel command line is printable text; remove it',
    });
  }
  return {
    entries: p.boot.entries ?? 'type1',
    cmdline,
    timeout: p.boot.timeout,
    tries: p.boot.tries,
    ...(p.boot.secureBoot ? { secureBoot: { enroll: p.boot.secureBoot.enroll ?? 'force' } } : {}),
  };
}

const KEY_ORDER = ['entries', 'cmdline', 'timeout', 'tries', 'secureBoot'];

/**
 * The record's lines in release.json: one key per line at four spaces, known keys first and
 * any others sorted after them, so the on-device script can read it with sed.
 */
export function encodeReleaseBoot(b: ReleaseBoot): string[] {
  const rank = (k: string) => (KEY_ORDER.includes(k) ? KEY_ORDER.indexOf(k) : KEY_ORDER.length);
  const keys = Object.keys(b)
    .filter((k) => (b as Record<string, unknown>)[k] !== undefined)
    .sort((x, y) => rank(x) - rank(y) || (x < y ? -1 : x > y ? 1 : 0));
  return ['  "boot": {', ...keys.map((k, i) => `    ${JSON.stringify(k)}: ${JSON.stringify((b as Record<string, unknown>)[k])}${i < keys.length - 1 ? ',' : ''}`), '  },'];
}

/**
 * A build.json's record; undefined for a build made before builds recorded it (whose `boot`
 * held only `entries` and a `secureBoot` flag).
 */
export function parseBuildBoot(raw: unknown, origin: string): ReleaseBoot | undefined {
  if (raw === undefined || (typeof raw === 'object' && raw !== null && !('tries' in raw))) return undefined;
  const r = ReleaseBootSchema.safeParse(raw);
  if (!r.success) throw new InputError(`${origin}: boot.${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`, { hint: 'rebuild with ossify build' });
  return r.data;
}
