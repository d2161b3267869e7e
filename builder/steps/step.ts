import type { SecureBootKeySet } from '../boot/secureboot/profile.ts';
import type { PlacedPartition } from '../disk/assemble.ts';
import type { VerityResult } from '../formats/verity.ts';
import { loadInput, type InputLock, type SourceRecord } from '../inputs/index.ts';
import type { LoadedProfile } from '../profile/load.ts';
import type { Input, Profile } from '../profile/schema.ts';
import type { Content } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import type { Extent } from '../util/extents.ts';

/**
 * A build step, declared once: its name, what it reads of the profile, the typed values it
 * takes from earlier steps and hands to later ones, the build-directory files it reads and
 * writes, its version, whether it applies to a profile, and how it runs. The stage cache
 * (builder/cache/stages.ts) derives a step's key from this declaration alone: the profile slice
 * in `reads`, and the outputs of the steps that made what it `needs`, `mayUse` and `readsFiles`.
 */

/** The values steps hand each other: a build's typed intermediate assets, by name. */
export interface Values {
  /** The unpacked kernel input (its modules). */
  kernelTree: FileTree;
  kernelVersion: string;
  vmlinuz: Content;
  busybox: Content;
  systemdBoot: Content;
  /** systemd-stub, for `boot.entries: uki`. */
  stub: Content | null;
  secureBoot: SecureBootKeySet | null;
  initramfs: Uint8Array;
  rootfs: FileTree;
  verity: VerityResult;
  partitions: PlacedPartition[];
  /** The byte ranges of disk.raw that were written (the rest is holes), for the output formats. */
  diskExtents: Extent[];
}

export type ValueName = keyof Values;

/** What a build gives every step besides its inputs. */
export interface BuildCtx {
  loaded: LoadedProfile;
  /** The build directory the steps write their files into. */
  work: string;
  cacheDir: string;
  lock?: InputLock;
}

export interface StepEnv extends BuildCtx {
  profile: Profile;
  log(line: string): void;
  /** Loads an input for the profile's architecture; its sources are recorded as this step's. */
  fetch(input: Input): Promise<FileTree>;
  /** The sources every earlier step recorded (the SBOM lists them). */
  sourcesBefore: readonly SourceRecord[];
}

export interface StepDef<N extends ValueName, M extends ValueName, O extends ValueName> {
  name: string;
  /** Bump when the step's behaviour changes without its code changing (its data, a tool). */
  version: number;
  /** Whether the step applies to a profile; one that does not is not run, shown or cached. */
  applies?: (p: Profile) => boolean;
  /** What the step reads of the profile: dotted paths, or `$epoch`, `$baseDigest`, `$digest`, `$sources`. */
  reads: readonly string[];
  /** Values from earlier steps it takes. */
  needs: readonly N[];
  /** Values it takes when the step that makes them applies (verity, for one). */
  mayUse?: readonly M[];
  /** Build-directory files earlier steps wrote that it reads. */
  readsFiles?: readonly string[];
  /** The values it returns. */
  makes: readonly O[];
  /** Of those, the ones no cache can hold (file trees, keys): after a hit they are made again when a later step needs them. */
  heavy?: readonly O[];
  /** Build-directory files it (re)writes; a step that writes any other fails. */
  writes?: readonly string[];
  /** It fetches and unpacks inputs: such steps run one at a time in a process (they share the download cache). */
  fetches?: boolean;
  /** Where to keep the hash state of its sparse output (disk.raw), for a later step that rewrites past it. */
  checkpoint?: (out: Pick<Values, O>, p: Profile) => number | undefined;
  /** It rewrites a file an earlier step wrote only from this offset on, so the cache rescans it from there. */
  rewritesFrom?: (input: Pick<Values, N>, p: Profile) => number | undefined;
  run(input: Pick<Values, N> & Partial<Pick<Values, M>>, env: StepEnv): Promise<Pick<Values, O>>;
}

/** A declared step, its value types erased so that steps of different shapes share one list. */
export interface Step {
  readonly name: string;
  readonly version: number;
  readonly applies: (p: Profile) => boolean;
  readonly reads: readonly string[];
  readonly needs: readonly ValueName[];
  readonly mayUse: readonly ValueName[];
  readonly readsFiles: readonly string[];
  readonly makes: readonly ValueName[];
  readonly heavy: readonly ValueName[];
  readonly writes: readonly string[];
  readonly fetches: boolean;
  readonly checkpoint?: (out: Partial<Values>, p: Profile) => number | undefined;
  readonly rewritesFrom?: (input: Partial<Values>, p: Profile) => number | undefined;
  run(input: Partial<Values>, env: StepEnv): Promise<Partial<Values>>;
}

export function defineStep<const N extends ValueName = never, const M extends ValueName = never, const O extends ValueName = never>(d: StepDef<N, M, O>): Step {
  // The runner hands `run` exactly the values in `needs` (and those of `mayUse` that were made) and keeps what it returns under `makes`.
  return {
    name: d.name,
    version: d.version,
    applies: d.applies ?? (() => true),
    reads: d.reads,
    needs: d.needs,
    mayUse: d.mayUse ?? [],
    readsFiles: d.readsFiles ?? [],
    makes: d.makes,
    heavy: d.heavy ?? [],
    writes: d.writes ?? [],
    fetches: d.fetches === true,
    ...(d.checkpoint ? { checkpoint: d.checkpoint as Step['checkpoint'] } : {}),
    ...(d.rewritesFrom ? { rewritesFrom: d.rewritesFrom as Step['rewritesFrom'] } : {}),
    run: d.run as Step['run'],
  };
}

/** The environment of one run of a step, and the sources it records. */
export function stepEnv(ctx: BuildCtx, log: (line: string) => void, sourcesBefore: readonly SourceRecord[]): { env: StepEnv; sources: SourceRecord[] } {
  const sources: SourceRecord[] = [];
  const env: StepEnv = {
    ...ctx,
    profile: ctx.loaded.profile,
    log,
    sourcesBefore,
    async fetch(input) {
      const loaded = await loadInput(input, { cacheDir: ctx.cacheDir, log, arch: ctx.loaded.profile.arch, ...(ctx.lock ? { lock: ctx.lock } : {}) });
      sources.push(...loaded.sources);
      return loaded.tree;
    },
  };
  return { env, sources };
}
