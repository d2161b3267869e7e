import { isAbsolute, posix, relative, resolve, sep } from 'node:path';
import { inputKind } from '../inputs/index.ts';
import type { Input, Profile } from '../profile/schema.ts';
import { canonicalJson } from '../util/hash.ts';
import type { SourceKey } from './types.ts';

/** Every input of a profile with where it is, in profile order: `kernel.input`, `rootfs.inputs[1]`, … */
export function profileInputs(profile: Profile): { at: string; input: Input }[] {
  const out: { at: string; input: Input }[] = [{ at: 'kernel.input', input: profile.kernel.input }];
  out.push({ at: 'initramfs.busybox', input: profile.initramfs.busybox });
  for (const [i, p] of (profile.initramfs.programs ?? []).entries()) out.push({ at: `initramfs.programs[${i}].from`, input: p.from });
  for (const [i, input] of profile.rootfs.inputs.entries()) out.push({ at: `rootfs.inputs[${i}]`, input });
  for (const [i, p] of (profile.rootfs.programs ?? []).entries()) out.push({ at: `rootfs.programs[${i}].from`, input: p.from });
  out.push({ at: 'boot.systemdBoot', input: profile.boot.systemdBoot });
  return out;
}

/** A path as the lock file writes it: relative to the profile's directory, with "/". */
export function lockPath(abs: string, profileDir: string): string {
  const rel = relative(profileDir, abs).split(sep).join(posix.sep);
  return rel === '' ? '.' : rel;
}

export function absPath(lockRel: string, profileDir: string): string {
  return isAbsolute(lockRel) ? lockRel : resolve(profileDir, lockRel);
}

/**
 * What decides an input's resolution, and so keys its pin: the packages, which
 * dependencies to follow and the Debian architecture, the image reference and platform, the archive's path. Filters,
 * targets and `allow:` do not change what is fetched, so editing them keeps the pin.
 * `dir:` and `files:` are the checkout itself and have no pin (undefined).
 */
export function sourceKey(input: Input, profileDir: string, arch: string): SourceKey | undefined {
  return inputKind(input).lock?.key(input, arch, (abs) => lockPath(abs, profileDir));
}

export function keyText(key: SourceKey): string {
  return canonicalJson(key);
}
