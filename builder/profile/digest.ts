import { isAbsolute, posix, relative, resolve, sep, dirname } from 'node:path';
import { canonicalJson, sha256Hex } from '../util/hash.ts';
import type { Profile } from './schema.ts';

/**
 * The identity of a resolved profile: disk GUIDs, cache keys and release.json derive from it,
 * so it must say what is built and nothing about where or how it was written down.
 *
 * - Key order, comments, quoting, and how the settings are split across `extends` files do
 *   not count: the input is the canonical JSON of the zod-parsed profile, without `extends`
 *   and `$schema` (the caller strips both).
 * - Where the checkout lives does not count: local paths are given relative to the top
 *   profile's directory, with "/" separators (see portablePath).
 * - The effective epoch does count, SOURCE_DATE_EPOCH included: a different epoch puts
 *   different timestamps into every artifact, so two builds with the same digest but
 *   different bytes would break the promise that a digest names one image.
 * - `outputs` does not count: it says which image formats the same disk is also written in,
 *   and the disk (its GUIDs derive from this digest) must not change with that list.
 */
export function profileDigest(portable: Profile): string {
  const { outputs: _outputs, ...image } = portable;
  return `sha256:${sha256Hex(canonicalJson(image))}`;
}

/**
 * A local path as it enters the digest. A path the user wrote relative is re-expressed
 * relative to the top profile's directory (a parent profile elsewhere in the checkout still
 * gives a checkout-independent path). A path written absolute already names one place on
 * the host, whatever the checkout, so it stays as written (normalised).
 */
export function portablePath(value: string, declaredIn: string, topDir: string): string {
  if (isAbsolute(value)) return resolve(value).split(sep).join(posix.sep);
  const rel = relative(topDir, resolve(dirname(declaredIn), value)).split(sep).join(posix.sep);
  return rel === '' ? '.' : rel;
}
