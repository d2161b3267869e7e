/**
 * What a lock file pins for one input source. Only what comes from outside the checkout is
 * pinned: archive packages by version and sha256, images by manifest digest, local archives
 * and .deb files by sha256. `dir:` and `files:` are the checkout itself and are not pinned.
 */

import { z } from 'zod';

/** How the lock file writes a sha256 and a digest. */
export const LockSha256 = z.string().regex(/^[0-9a-f]{64}$/);
export const LockDigest = z.string().regex(/^sha256:[0-9a-f]{64}$/);

/** A package from the archive: enough to fetch exactly it again (`apt-get download name=version`). */
export interface DebArchivePin {
  package: string;
  version: string;
  architecture: string;
  sha256: string;
  filename?: string;
}

/** A .deb file given by path (relative to the profile's directory in the lock file). */
export interface DebFilePin {
  file: string;
  package: string;
  version?: string;
  sha256: string;
}

export type DebPackagePin = DebArchivePin | DebFilePin;

export interface OciPin {
  /** The image manifest used (the platform's, when the reference names an index). */
  manifest: string;
  /** The index the reference resolved to, when it was one. */
  index?: string;
}

export type Pin = { deb: DebPackagePin[] } | { oci: OciPin } | { tar: { sha256: string } };

/** The source of an input, as a lock file keys it: what decides the resolution, nothing else. */
export type SourceKey =
  | { deb: string[]; depends: boolean | string[]; arch?: string }
  | { oci: string; platform: string }
  | { tar: string };
