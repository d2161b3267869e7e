import type { Hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { InputLock } from '../inputs/types.ts';
import type { LoadedProfile } from '../profile/load.ts';
import type { Step } from '../steps.ts';
import { hostFileContent, readContent, type Content } from '../tree/content.ts';
import { OssifyError } from '../util/errors.ts';
import { canonicalJson, sha256File, sha256Hex } from '../util/hash.ts';
import { identifyProfile, type IdentifiedProfile } from './identity.ts';
import { builderIdentity, CACHE_FORMAT, stageKey } from './key.ts';
import type { RemoteStageCache } from './remote.ts';
import { hashPrefix, type ScanOptions, type SparseChunk } from './sparse.ts';
import { isSparse, StageCache, type FileOutput, type SparseOutput, type StageRecord } from './store.ts';

/**
 * The stage cache around the pipeline's steps (docs/fleet.md). The pipeline stays a flat list
 * of named steps whose bodies know nothing of caching; `StageRun.wrap` puts each known step
 * behind a key made of exactly what it reads (the profile slice, the contents of its inputs,
 * the outputs of the stages it depends on, the builder). On a hit the step's outputs come from
 * the store: the files it wrote into the build directory, and the context values it set
 * (bytes and file contents as verified blobs, plain values as JSON). What cannot be stored
 * (an unpacked kernel tree, the rootfs tree, signing keys) is "heavy": it stays unset, and is
 * made for real only when a later step that misses needs it, by running the step that makes it.
 *
 * Robustness against steps this file does not know (others add steps to the pipeline): they
 * always run, any heavy value they read is made first, and the files and values they change
 * enter the key of every later stage. A value that cannot be hashed turns caching off for the
 * rest of the build instead of risking a stale hit.
 */

export interface StageDef {
  /** Bump when the step's behaviour changes without its code changing (its data, a tool). */
  version: number;
  /** Stages whose outputs this one reads. */
  deps: string[];
  /** What the step reads of the profile: dotted paths into the identified profile, or `$epoch`, `$baseDigest`, `$digest`, `$sources`. */
  slice: string[];
  /** Heavy context values the step changes in place (the SBOM goes into the rootfs tree). */
  mutates?: string[];
  /** Applies to this profile (the step is a no-op otherwise). */
  when?: (p: LoadedProfile['profile']) => boolean;
  /** Scan a sparse output from a known prefix (see the `site seed` stage). */
  sparseFrom?: (run: StageRun<StageCtx>, name: string) => Promise<ScanOptions['from'] | undefined>;
  /** Return the hash state at this offset while scanning the step's sparse output. */
  checkpoint?: (ctx: StageCtx) => number | undefined;
}

/**
 * STEP_VERSION of each step and what it reads. The builder's code digest is in every key too,
 * so an edit to a step's code invalidates its entries on its own; a version bump is for a
 * change of behaviour the code digest cannot see.
 */
export const STAGES: Record<string, StageDef> = {
  'kernel input': { version: 1, deps: [], slice: ['arch', 'kernel.input'] },
  'boot inputs': { version: 1, deps: [], slice: ['arch', 'initramfs.busybox', 'boot'] },
  initramfs: { version: 1, deps: ['kernel input', 'boot inputs'], slice: ['arch', 'kernel', 'initramfs', 'rootfs.verity', '$epoch'] },
  'rootfs tree': { version: 1, deps: [], slice: ['arch', 'name', 'version', 'rootfs.inputs', 'rootfs.programs', 'rootfs.allRoot', '$baseDigest', '$epoch'] },
  sbom: { version: 1, deps: ['rootfs tree'], slice: ['arch', 'name', 'version', '$baseDigest', '$epoch', '$sources'], mutates: ['rootfs'] },
  squashfs: { version: 1, deps: ['sbom'], slice: ['rootfs.squashfs', 'disk.root', '$epoch'] },
  verity: { version: 1, deps: ['squashfs'], slice: ['rootfs.verity', 'disk.root'] },
  kernel: { version: 1, deps: ['kernel input'], slice: [] },
  uki: { version: 1, deps: ['kernel input', 'boot inputs', 'initramfs', 'verity'], slice: ['arch', 'name', 'version', 'kernel.cmdline', 'boot', 'rootfs.verity', '$baseDigest', '$epoch'] },
  disk: {
    version: 1,
    deps: ['boot inputs', 'kernel', 'initramfs', 'squashfs', 'verity', 'uki'],
    slice: ['arch', 'name', 'version', 'kernel.cmdline', 'boot', 'disk', 'rootfs.verity', '$baseDigest', '$epoch'],
    checkpoint: (ctx) => seedOffset(ctx),
  },
  // fleet: the site's data as a tar, then that tar at the start of STATE on the disk.
  site: { version: 1, deps: [], slice: ['site', '$epoch'], when: (p) => p.site !== undefined },
  'site seed': { version: 1, deps: ['disk', 'site'], slice: [], when: (p) => p.site !== undefined, sparseFrom: seedPrefix },
};

/**
 * Steps that fetch and unpack inputs run one at a time in a process: the download cache they
 * share was written for one build at a time (two builds of a matrix may need the same package).
 */
const INPUT_STEPS = new Set(['kernel input', 'boot inputs', 'initramfs', 'rootfs tree']);
let inputQueue: Promise<unknown> = Promise.resolve();

/** Names of values that must never be written to a cache (or a registry): they stay heavy. */
const SECRET = /secret|key|secureboot|signer|password|token|credential/i;
/** Build-directory files kept as chunks (all but a few MiB of them are holes). */
const SPARSE = new Set(['disk.raw']);

export interface StageCtx {
  loaded: LoadedProfile;
  work: string;
  cacheDir: string;
  sources: unknown[];
  lock?: InputLock;
}

export type StageStatus = 'hit' | 'remote' | 'miss' | 'run' | 'off';

export interface StageRunOptions {
  /** The local store; undefined runs every step (`--no-cache`). */
  cache?: StageCache;
  remote?: { from?: RemoteStageCache; to?: RemoteStageCache };
  log?: (line: string) => void;
  /** The known steps (default STAGES); tests give their own. */
  stages?: Record<string, StageDef>;
  /** How the profile is identified (default identifyProfile); tests give their own. */
  identify?: (ctx: StageCtx) => Promise<IdentifiedProfile>;
}

class NotSerializable extends Error {}

/** Thrown (through the context proxy) when a step reads a heavy value that is not made yet. */
class NeedValue extends Error {
  constructor(readonly field: string) {
    super(`stage cache: ${field} is not made yet`);
  }
}

const isContent = (v: unknown): v is Content =>
  typeof v === 'object' && v !== null && typeof (v as Content).stream === 'function' && typeof (v as Content).size === 'number' && typeof (v as Content).origin === 'string';

function pick(obj: Record<string, unknown>, path: string): unknown {
  let v: unknown = obj;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

// `outputs` is read by no stage: the image formats are written after the steps, uncached.
const KNOWN_TOP = new Set(['$schema', 'extends', 'name', 'version', 'arch', 'epoch', 'kernel', 'initramfs', 'rootfs', 'boot', 'disk', 'site', 'outputs']);

/** Where the site seed goes: the STATE partition (set once the disk step placed the partitions). */
function seedOffset(ctx: StageCtx): number | undefined {
  if (ctx.loaded.profile.site === undefined) return undefined;
  const parts = (ctx as unknown as { partitions?: { label: string; offset: number }[] }).partitions;
  return parts?.find((p) => p.label === 'STATE')?.offset;
}

/** Hash states at the seed offset of disks made or restored in this process, by the disk stage's output. */
const checkpoints = new Map<string, Hash>();

async function seedPrefix(run: StageRun<StageCtx>, name: string): Promise<ScanOptions['from'] | undefined> {
  if (name !== 'disk.raw') return undefined;
  const offset = seedOffset(run.ctx);
  const disk = run.record('disk');
  const image = disk?.files['disk.raw'];
  if (offset === undefined || !disk || !image || !isSparse(image)) return undefined;
  const memoKey = `${disk.output}:${offset}`;
  let h = checkpoints.get(memoKey);
  if (!h) {
    h = await hashPrefix(image.sparse, offset, (c) => run.cache!.blobPath(c.sha256));
    rememberCheckpoint(memoKey, h);
  }
  return { offset, hash: h.copy(), chunks: image.sparse.chunks as SparseChunk[] };
}

function rememberCheckpoint(key: string, h: Hash): void {
  checkpoints.set(key, h);
  while (checkpoints.size > 8) checkpoints.delete(checkpoints.keys().next().value!);
}

interface WorkFile {
  size: number;
  mtimeMs: number;
  ino: number;
}

async function snapshot(work: string): Promise<Map<string, WorkFile>> {
  const out = new Map<string, WorkFile>();
  for (const name of await readdir(work).catch(() => [] as string[])) {
    if (name.startsWith('.ossify-tmp-')) continue;
    const st = await stat(join(work, name)).catch(() => undefined);
    if (st?.isFile()) out.set(name, { size: st.size, mtimeMs: st.mtimeMs, ino: st.ino });
  }
  return out;
}

function changedFiles(before: Map<string, WorkFile>, after: Map<string, WorkFile>): string[] {
  return [...after.entries()].filter(([n, f]) => {
    const b = before.get(n);
    return !b || b.size !== f.size || b.mtimeMs !== f.mtimeMs || b.ino !== f.ino;
  }).map(([n]) => n).sort();
}

export class StageRun<C extends StageCtx> {
  readonly status: Record<string, StageStatus> = {};
  readonly cache: StageCache | undefined;
  private readonly remote: StageRunOptions['remote'];
  private readonly records = new Map<string, StageRecord>();
  /** Output digest of each stage processed so far (hit or run). */
  private readonly outputs = new Map<string, string>();
  /** Steps whose bodies ran in this build. */
  private readonly ran = new Set<string>();
  /** Heavy value → the stages that set or changed it, in pipeline order. */
  private readonly producers = new Map<string, string[]>();
  /** Digests of what unknown steps changed, in order; every later key includes them. */
  private readonly taint: string[] = [];
  /** An unknown step changed something no key can describe: no more lookups this build. */
  private opaque: string | undefined;
  private identified: Promise<IdentifiedProfile> | undefined;
  /** sha256 and size of files in the build directory, as stages produced or restored them. */
  private readonly digests = new Map<string, FileOutput>();
  private steps = new Map<string, Step<C>>();
  private stepLog: ((line: string) => void) | undefined;
  private readonly log: (line: string) => void;
  private readonly warningsFrom: number;
  private readonly defs: Record<string, StageDef>;

  constructor(
    readonly ctx: C,
    opts: StageRunOptions = {},
  ) {
    this.cache = opts.cache;
    this.remote = opts.remote;
    this.log = opts.log ?? (() => {});
    this.defs = opts.stages ?? STAGES;
    if (opts.identify) this.identified = opts.identify(ctx);
    this.warningsFrom = this.cache?.warnings.length ?? 0;
  }

  /** What went wrong with the cache and was worked around (corrupt entries dropped, a registry that did not answer). */
  get warnings(): string[] {
    return [...(this.cache?.warnings.slice(this.warningsFrom) ?? []), ...this.remoteWarnings];
  }

  private readonly remoteWarnings: string[] = [];

  /** The record a stage was restored from or stored as (undefined when it ran uncached). */
  record(stage: string): StageRecord | undefined {
    return this.records.get(stage);
  }

  /** Records of every stage of this build, for `--cache-to`. */
  allRecords(): StageRecord[] {
    return [...this.records.values()];
  }

  /** The known sha256 and size of a build-directory file, when a stage produced or restored it and nothing changed it since. */
  async digestOf(name: string): Promise<FileOutput | undefined> {
    const d = this.digests.get(name);
    if (!d) return undefined;
    const st = await stat(join(this.ctx.work, name)).catch(() => undefined);
    return st?.size === d.size ? d : undefined;
  }

  /** The steps, each behind the cache. */
  wrap(steps: Step<C>[]): Step<C>[] {
    this.steps = new Map(steps.map((s) => [s.name, s]));
    return steps.map((s) => ({ name: s.name, run: (ctx: C, log: (l: string) => void) => this.runStep(s, ctx, log) }));
  }

  private async profileIdentity(): Promise<IdentifiedProfile> {
    const { loaded, cacheDir, lock } = this.ctx;
    this.identified ??= identifyProfile(loaded, { cacheDir, arch: loaded.profile.arch, ...(this.cache ? { memoDir: this.cache.root } : {}), ...(lock ? { lock } : {}) });
    return this.identified;
  }

  private async keyOf(name: string, def: StageDef): Promise<string> {
    const id = await this.profileIdentity();
    const slice: Record<string, unknown> = {};
    for (const path of def.slice) {
      if (path === '$epoch') slice[path] = this.ctx.loaded.epoch;
      else if (path === '$baseDigest') slice[path] = id.baseDigest;
      else if (path === '$digest') slice[path] = this.ctx.loaded.digest;
      else if (path === '$sources') slice[path] = [...new Set(this.ctx.sources.map((s) => canonicalJson(s)))].sort();
      else slice[path] = pick(id.profile, path) ?? null;
    }
    // Settings nobody told this file about count for every stage: a stale hit is worse than a rebuild.
    const unknown = Object.fromEntries(Object.keys(id.profile).filter((k) => !KNOWN_TOP.has(k)).sort().map((k) => [k, id.profile[k]]));
    return stageKey({
      format: CACHE_FORMAT,
      builder: builderIdentity(),
      step: name,
      version: def.version,
      slice,
      unknown,
      deps: Object.fromEntries(def.deps.map((d) => [d, this.outputs.get(d) ?? null])),
      taint: this.taint,
    });
  }

  private async runStep(step: Step<C>, ctx: C, log: (line: string) => void): Promise<void> {
    this.stepLog = log;
    const def = this.defs[step.name];
    if (def?.when && !def.when(ctx.loaded.profile)) {
      await step.run(ctx, log);
      return;
    }
    if (!def) return this.runUnknown(step, log);
    if (!this.cache || this.opaque) {
      if (this.opaque && this.cache) log(`not cached: ${this.opaque}`);
      await this.execute(step, log);
      this.status[step.name] = 'off';
      return;
    }
    const key = await this.keyOf(step.name, def);
    const found = await this.lookup(key);
    if (found) {
      await this.restore(step.name, def, found.record);
      this.status[step.name] = found.how;
      log(`${found.how === 'remote' ? 'remote cache hit' : 'cache hit'} ${key.slice(0, 12)}`);
      return;
    }
    await this.cache.withLock(key, async () => {
      // Another build in this process may have made it while we waited.
      const now = await this.cache!.get(key);
      if (now) {
        await this.restore(step.name, def, now);
        this.status[step.name] = 'hit';
        log(`cache hit ${key.slice(0, 12)} (made by a concurrent build)`);
        return;
      }
      log(`cache miss ${key.slice(0, 12)}`);
      const record = await this.produce(step, def, key, log);
      await this.cache!.put(record);
      this.status[step.name] = 'miss';
    });
  }

  private async lookup(key: string): Promise<{ record: StageRecord; how: 'hit' | 'remote' } | undefined> {
    const local = await this.cache!.get(key);
    if (local) return { record: local, how: 'hit' };
    const got = await this.fetchRemote(key);
    return got ? { record: got, how: 'remote' } : undefined;
  }

  /** The record from the `--cache-from` registry (into the local store), if it has one; a registry failure is a miss. */
  async fetchRemote(key: string): Promise<StageRecord | undefined> {
    const from = this.remote?.from;
    if (!from || !this.cache) return undefined;
    return from.fetch(key, this.cache).catch((err: unknown) => {
      const msg = `remote cache ${from.name}: ${err instanceof Error ? err.message : String(err)}; the stage runs here`;
      (this.stepLog ?? this.log)(msg);
      if (!this.remoteWarnings.includes(msg)) this.remoteWarnings.push(msg);
      return undefined;
    });
  }

  /** Why caching is off for the rest of this build, if it is. */
  get opaqueReason(): string | undefined {
    return this.opaque;
  }

  /** Takes a record made outside the step list (the installer image) into this build's set. */
  adopt(name: string, record: StageRecord): void {
    this.accept(name, record);
  }

  /** Runs a known step's body and turns what it did into a record. */
  private async produce(step: Step<C>, def: StageDef, key: string, log: (l: string) => void): Promise<StageRecord> {
    let before = await snapshot(this.ctx.work);
    let values = { ...(this.ctx as unknown as Record<string, unknown>) };
    let sourcesBefore = this.ctx.sources.length;
    // What a stage made on demand (a kernel tree for the initramfs) is that stage's output, not this one's.
    await this.execute(step, log, async () => {
      before = await snapshot(this.ctx.work);
      values = { ...(this.ctx as unknown as Record<string, unknown>) };
      sourcesBefore = this.ctx.sources.length;
    });
    const after = await snapshot(this.ctx.work);
    const cache = this.cache!;
    const files: StageRecord['files'] = {};
    for (const name of changedFiles(before, after)) {
      const path = join(this.ctx.work, name);
      if (SPARSE.has(name)) {
        const from = def.sparseFrom ? await def.sparseFrom(this as unknown as StageRun<StageCtx>, name) : undefined;
        const at = def.checkpoint?.(this.ctx);
        const { out, checkpoint } = await cache.putSparse(path, { ...(from ? { from } : {}), ...(at !== undefined ? { checkpointAt: at } : {}) });
        files[name] = out;
        this.digests.set(name, { sha256: out.sparse.sha256, size: out.sparse.size });
        if (checkpoint && at !== undefined) this.pendingCheckpoint = { at, hash: checkpoint };
      } else {
        const out = await cache.putFile(path);
        files[name] = out;
        this.digests.set(name, out);
      }
    }
    const stored: Record<string, unknown> = {};
    const heavy: string[] = [...(def.mutates ?? [])];
    const now = this.ctx as unknown as Record<string, unknown>;
    for (const k of Object.keys(now).sort()) {
      if (k === 'sources' || now[k] === values[k]) continue;
      try {
        if (SECRET.test(k)) throw new NotSerializable(k);
        stored[k] = await this.serialize(now[k]);
      } catch (err) {
        if (!(err instanceof NotSerializable)) throw err;
        heavy.push(k);
      }
    }
    for (const h of heavy) this.producers.set(h, [...(this.producers.get(h) ?? []), step.name]);
    const sources = this.ctx.sources.slice(sourcesBefore);
    const record: StageRecord & { heavy: string[] } = {
      format: CACHE_FORMAT,
      key,
      step: step.name,
      output: '',
      files,
      values: stored,
      sources,
      heavy: [...new Set(heavy)].sort(),
      made: { profile: this.ctx.loaded.profile.name, ...(this.ctx.loaded.profile.site ? { site: this.ctx.loaded.profile.site.name } : {}) },
    };
    record.output = outputDigest(record);
    this.accept(step.name, record);
    return record;
  }

  private pendingCheckpoint: { at: number; hash: Hash } | undefined;

  private accept(name: string, record: StageRecord): void {
    this.records.set(name, record);
    this.outputs.set(name, record.output);
    if (this.pendingCheckpoint) {
      rememberCheckpoint(`${record.output}:${this.pendingCheckpoint.at}`, this.pendingCheckpoint.hash);
      this.pendingCheckpoint = undefined;
    }
  }

  private async restore(name: string, def: StageDef, record: StageRecord): Promise<void> {
    const cache = this.cache!;
    for (const [file, out] of Object.entries(record.files)) {
      const dest = join(this.ctx.work, file);
      if (isSparse(out)) {
        await cache.writeSparseOut(out, dest);
        this.digests.set(file, { sha256: out.sparse.sha256, size: out.sparse.size });
      } else {
        await cache.copyOut(out.sha256, dest);
        this.digests.set(file, out);
      }
    }
    const ctx = this.ctx as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(record.values)) ctx[k] = this.deserialize(v);
    this.ctx.sources.push(...record.sources);
    const heavy = [...((record as StageRecord & { heavy?: string[] }).heavy ?? []), ...(def.mutates ?? [])];
    for (const h of new Set(heavy)) this.producers.set(h, [...(this.producers.get(h) ?? []), name]);
    this.accept(name, record);
  }

  /** Runs a step's body for real, first making any heavy value it turns out to read. */
  private inputDepth = 0;

  private async execute(step: Step<C>, log: (l: string) => void, afterMaterialize?: () => Promise<void>): Promise<void> {
    if (!INPUT_STEPS.has(step.name) || this.inputDepth > 0) return this.executeNow(step, log, afterMaterialize);
    const prev = inputQueue;
    let release!: () => void;
    inputQueue = new Promise<void>((r) => (release = r));
    await prev;
    this.inputDepth++;
    try {
      return await this.executeNow(step, log, afterMaterialize);
    } finally {
      this.inputDepth--;
      release();
    }
  }

  private async executeNow(step: Step<C>, log: (l: string) => void, afterMaterialize?: () => Promise<void>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let needed: string | undefined;
      const proxy = new Proxy(this.ctx, {
        get: (target, prop, receiver) => {
          if (typeof prop === 'string' && this.missing(prop, step.name)) {
            needed = prop;
            throw new NeedValue(prop);
          }
          return Reflect.get(target, prop, receiver);
        },
      });
      try {
        await step.run(proxy, log);
        this.ran.add(step.name);
        return;
      } catch (err) {
        // A step may wrap the error it got; what it touched is what counts.
        if (needed === undefined || attempt > 8) throw err;
        await this.materialize(needed, step.name, log);
        await afterMaterialize?.();
      }
    }
  }

  /** True when `field` is heavy and a stage before `stepName` that makes or changes it did not run. */
  private missing(field: string, stepName: string): boolean {
    const ps = this.producers.get(field);
    return ps !== undefined && ps.some((p) => p !== stepName && !this.ran.has(p));
  }

  private async materialize(field: string, stepName: string, log: (l: string) => void): Promise<void> {
    for (const p of this.producers.get(field) ?? []) {
      if (p === stepName || this.ran.has(p)) continue;
      const step = this.steps.get(p);
      if (!step) continue;
      log(`making ${field}: running ${p} (its cached outputs do not include it)`);
      const t0 = performance.now();
      await this.execute(step, (l) => log(`${p}: ${l}`));
      log(`made ${field} in ${Math.round(performance.now() - t0)} ms`);
    }
  }

  /** A step the cache does not know: it always runs; what it changes enters every later key. */
  private async runUnknown(step: Step<C>, log: (l: string) => void): Promise<void> {
    let before = await snapshot(this.ctx.work);
    let values = { ...(this.ctx as unknown as Record<string, unknown>) };
    await this.execute(step, log, async () => {
      before = await snapshot(this.ctx.work);
      values = { ...(this.ctx as unknown as Record<string, unknown>) };
    });
    this.status[step.name] = 'run';
    if (!this.cache) return;
    const after = await snapshot(this.ctx.work);
    const changed: Record<string, unknown> = {};
    for (const name of changedFiles(before, after)) {
      const d = { sha256: await sha256File(join(this.ctx.work, name)), size: after.get(name)!.size };
      this.digests.set(name, d);
      changed[`file:${name}`] = d.sha256;
    }
    const now = this.ctx as unknown as Record<string, unknown>;
    for (const k of Object.keys(now).sort()) {
      if (now[k] === values[k]) continue;
      if (k === 'sources') {
        changed[k] = canonicalJson(this.ctx.sources);
        continue;
      }
      try {
        changed[`value:${k}`] = sha256Hex(canonicalJson(await this.serialize(now[k], false)));
      } catch (err) {
        if (!(err instanceof NotSerializable)) throw err;
        this.opaque ??= `step ${step.name} set ${k}, which has no digest`;
      }
    }
    this.taint.push(sha256Hex(canonicalJson({ step: step.name, changed })));
  }

  /** JSON for the record; bytes and contents become blob references (stored when `store`). */
  private async serialize(v: unknown, store = true): Promise<unknown> {
    if (v === undefined) return { $undefined: true };
    if (v === null || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return v;
    if (v instanceof Uint8Array) {
      const out = store ? await this.cache!.putBytes(v) : { sha256: sha256Hex(v), size: v.length };
      return { $blob: out.sha256, size: out.size, type: 'bytes' };
    }
    if (isContent(v)) {
      const bytes = await readContent(v);
      const out = store ? await this.cache!.putBytes(bytes) : { sha256: sha256Hex(bytes), size: bytes.length };
      return { $blob: out.sha256, size: out.size, type: 'content' };
    }
    if (Array.isArray(v)) return Promise.all(v.map((x) => this.serialize(x, store)));
    if (typeof v === 'object') {
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) throw new NotSerializable();
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) {
        if (SECRET.test(k)) throw new NotSerializable(k);
        out[k] = await this.serialize((v as Record<string, unknown>)[k], store);
      }
      return out;
    }
    throw new NotSerializable();
  }

  private deserialize(v: unknown): unknown {
    if (Array.isArray(v)) return v.map((x) => this.deserialize(x));
    if (v === null || typeof v !== 'object') return v;
    const o = v as Record<string, unknown>;
    if (o.$undefined === true) return undefined;
    if (typeof o.$blob === 'string' && typeof o.size === 'number') {
      const path = this.cache!.blobPath(o.$blob);
      if (o.type === 'content') return hostFileContent(path, o.size);
      return new Uint8Array(cacheBytes(path, o.size));
    }
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, this.deserialize(x)]));
  }

  /** Pushes every record of this build that the `--cache-to` registry lacks. */
  async pushRemote(): Promise<{ pushed: number; skipped: number; bytes: number } | undefined> {
    const to = this.remote?.to;
    if (!to || !this.cache) return undefined;
    try {
      return await to.push(this.allRecords(), this.cache);
    } catch (err) {
      throw new OssifyError(`the build is complete, but pushing its stages to ${to.name} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  }

}

/** Blobs restored as bytes are small (an initramfs, a verity tree): read them synchronously once. */
function cacheBytes(path: string, size: number): Buffer {
  const b = readFileSync(path);
  if (b.length !== size) throw new Error(`${path} is ${b.length} bytes, expected ${size}`);
  return b;
}

/** A digest of everything a stage produced, as later keys see it. */
export function outputDigest(r: StageRecord & { heavy?: string[] }): string {
  const files = Object.fromEntries(Object.entries(r.files).map(([n, f]) => [n, isSparse(f) ? (f as SparseOutput).sparse.sha256 : (f as FileOutput).sha256]));
  // Heavy values have no digest of their own; the key that made them stands for them.
  return stageKey({ files, values: r.values, sources: r.sources, heavy: r.heavy?.length ? r.key : null });
}
