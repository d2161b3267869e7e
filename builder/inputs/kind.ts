import type { z } from 'zod';
import type { PathSegment } from '../profile/errors.ts';
import type { Input } from '../profile/schema.ts';
import type { Pin, SourceKey } from './pins.ts';
import type { InputContext, InputLock, LoadedInput } from './types.ts';

/** A local path of a profile rewritten (made absolute, portable, or its content's identity); `at` is where it sits. */
export type PathRewrite = (value: string, at: PathSegment[]) => string;

/** What the stage keys need to resolve a fetched input: the lock, the caches, the profile's architecture. */
export interface ResolutionContext {
  cacheDir: string;
  /** Where resolutions of unpinned inputs are remembered (default `<cacheDir>/stages`). */
  memoDir?: string;
  arch: string;
  lock?: InputLock;
  registry?: InputContext['registry'];
}

/** How the lock file handles a kind fetched from outside the checkout. */
export interface LockSupport<I extends Input> {
  /**
   * What decides the input's resolution, and so keys its pin; `relative` turns a local path
   * into the lock file's form (relative to the profile).
   */
  key(input: I, arch: string, relative: (abs: string) => string): SourceKey;
  /** Resolves the input from metadata only (apt records, registry manifests, file hashes). */
  resolve(input: I, ctx: InputContext): Promise<Pin>;
  /** The local files a pin names, as `absolute` makes them, with the sha256 it expects of them. */
  localFiles(pin: Pin, source: SourceKey, absolute: (rel: string) => string): { file: string; sha256: string }[];
  /** The pin with the local paths it holds passed through `fn` (lock file ↔ absolute). */
  mapPinPaths(pin: Pin, fn: (path: string) => string): Pin;
  /** How the lock file writes the kind's source key and pin: an entry is `{ source, usedBy, <kind>: pin }`. */
  schema: { source: z.ZodType; pin: z.ZodType };
}

/**
 * One kind of profile input (`deb:`, `dir:`, …): everything ossify knows about it outside
 * the profile schema, which stays the single description of what a profile may say.
 */
export interface InputKind<I extends Input = Input> {
  /** How errors and log lines name the input: its kind and what it points at. */
  origin(input: I): string;
  /** Unpacks the input into a file tree (local paths arrive absolute). */
  load(input: I, ctx: InputContext, origin: string): Promise<LoadedInput>;
  /** A copy of the input with every local path it names passed through `fn`. */
  mapPaths(input: I, at: PathSegment[], fn: PathRewrite): I;
  /** Kinds fetched from outside the checkout are pinned in the lock file; `dir:` and `files:` are not. */
  lock?: LockSupport<I>;
  /** What a stage key adds for the input besides the profile's text: what it resolves to now. */
  resolution?(input: I, identified: I, ctx: ResolutionContext): Promise<unknown>;
}
