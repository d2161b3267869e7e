import type { RegistryClientOptions } from '../oci/registry.ts';
import type { Input } from '../profile/schema.ts';
import type { Pin } from './pins.ts';
import type { FileTree } from '../tree/tree.ts';

/** The lock file as the loaders see it: a pin per input source, and what to do when one is off. */
export interface InputLock {
  /** The pin recorded for this input's source; undefined when the lock has none. */
  pin(input: Input): Pin | undefined;
  /** The input cannot be built as pinned (a local file changed): an error when frozen, else a warning. */
  stale(input: Input, why: string): void;
}

export interface InputContext {
  /** Root of the download cache (`blobs/sha256/…`, `deb/…`). */
  cacheDir: string;
  log?: (line: string) => void;
  /** The profile's architecture (uname -m): which packages and which image of an OCI index. Default DEFAULT_ARCH (builder/arch.ts). */
  arch?: string;
  lock?: InputLock;
  /** Registry client settings beyond the input's own (tests: retry policy, transport). */
  registry?: Omit<RegistryClientOptions, 'insecure' | 'caFile'>;
}

/** What an input was made from, for build.json and `ossify status`. */
export interface SourceRecord {
  kind: 'deb' | 'dir' | 'tar' | 'oci' | 'files';
  name: string;
  version?: string;
  sha256?: string;
}

export interface LoadedInput {
  tree: FileTree;
  sources: SourceRecord[];
  /** How the input was resolved, as the lock file records it (dir: and files: have none). */
  pin?: Pin;
}
