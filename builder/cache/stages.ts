import type { Hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { SourceRecord } from '../inputs/index.ts';
import { stepEnv, type BuildCtx, type Step, type ValueName, type Values } from '../steps/step.ts';
import { hostFileContent, readContent, type Content } from '../tree/content.ts';
import { OssifyError } from '../util/errors.ts';
import { DISK } from '../release/artifacts.ts';
import { canonicalJson, sha256Hex } from '../util/hash.ts';
import { identifyProfile, type IdentifiedProfile } from './identity.ts';
import { builderIdentity, CACHE_FORMAT, stageKey } from './key.ts';
import type { RemoteStageCache } from './remote.ts';
import { hashPrefix, type ScanOptions, type SparseChunk } from './sparse.ts';
import { isSparse, StageCache, type FileOutput, type SparseOutput, type StageRecord } from './store.ts';

/**
 * Runs the declared build steps (builder/steps/) in order, each behind the stage cache
 * (docs/fleet.md). A step's key is derived from its declaration alone: the profile slice it
 * `reads`, its version, and the outputs of the steps that made the values it `needs` or
 * `mayUse` and the files it `readsFiles` (the last earlier step that declares each). On a hit
 * the step's outputs come from the store: the files it wrote into the build directory and the
 * values it returned (bytes and file contents as verified blobs, plain values as JSON). A value
 * the step declares `heavy` (an unpacked tree, signing keys) is not stored: when a later step
 * that runs needs it, the step that makes it runs first, for real. Which step made the value
 * held now is tracked, so a value one step changes (the SBOM goes into the rootfs tree) is
 * never handed on in an earlier step's state.
 */

/** Build-directory files kept as chunks (all but a few MiB of them are holes). */
const SPARSE = new Set([DISK]);
/** Names of values that must never be written to a cache (or a registry). */
const SECRET = /secret|key|secureboot|signer|password|token|credential/i;
// `outputs` is read by no step: the image formats are written after the steps, uncached.
const KNOWN_TOP = new Set(['$schema', 'extends', 'name', 'version', 'arch', 'epoch', 'kernel', 'initramfs', 'rootfs', 'boot', 'disk', 'site', 'outputs']);

/** Steps that fetch and unpack inputs run one at a time in a process: two builds of a matrix may need the same package. */
let inputQueue: Promise<unknown> = Promise.resolve();

export type StageStatus = 'hit' | 'remote' | 'miss' | 'off';

export interface StageRunOptions {
  /** The local store; undefined runs every step (`--no-cache`). */
  cache?: StageCache;
  remote?: { from?: RemoteStageCache; to?: RemoteStageCache };
  log?: (line: string) => void;
  /** How the profile is identified (default identifyProfile); tests give their own. */
  identify?: (ctx: BuildCtx) => Promise<IdentifiedProfile>;
}

/** A step as the progress display runs it. */
export interface StepTask {
  name: string;
  run(log: (line: string) => void): Promise<void>;
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

/** Hash states at a rewrite offset of disks made or restored in this process, by the writing stage's output. */
const checkpoints = new Map<string, Hash>();

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

/** The last step before `index` in `steps` that `declares` `what`. */
function lastBefore<T>(steps: readonly Step[], index: number, declares: (s: Step) => readonly T[], what: T): Step | undefined {
  for (let i = index - 1; i >= 0; i--) if (declares(steps[i]!).includes(what)) return steps[i];
  return undefined;
}

/**
 * The steps whose outputs a step's key includes, from the declarations alone: whoever makes what
 * it takes, whether or not that step applies to this profile (a step that does not counts as null).
 */
export function dependencies(steps: readonly Step[], step: Step): string[] {
  const i = steps.indexOf(step);
  const deps = new Set<string>();
  for (const v of [...step.needs, ...step.mayUse]) {
    const p = lastBefore(steps, i, (s) => s.makes, v);
    if (!p) throw new OssifyError(`step ${step.name} takes ${v}, which no earlier step makes`);
    deps.add(p.name);
  }
  for (const f of step.readsFiles) {
    const p = lastBefore(steps, i, (s) => s.writes, f);
    if (!p) throw new OssifyError(`step ${step.name} reads ${f}, which no earlier step writes`);
    deps.add(p.name);
  }
  return [...deps].sort();
}

export class StageRun {
  readonly status: Record<string, StageStatus> = {};
  readonly cache: StageCache | undefined;
  private readonly remote: StageRunOptions['remote'];
  private readonly records = new Map<string, StageRecord>();
  /** Output digest of each stage processed so far (hit or made). */
  private readonly outputs = new Map<string, string>();
  /** The values held now, and which step made each (a restore or a real run). */
  private readonly values = new Map<ValueName, unknown>();
  private readonly madeBy = new Map<ValueName, string>();
  /** The sources each step recorded (when it ran, or as its record says). */
  private readonly sourcesOf = new Map<string, SourceRecord[]>();
  private identified: Promise<IdentifiedProfile> | undefined;
  /** sha256 and size of files in the build directory, as stages produced or restored them. */
  private readonly digests = new Map<string, FileOutput>();
  private readonly log: (line: string) => void;
  private readonly warningsFrom: number;
  private readonly remoteWarnings: string[] = [];
  /** The steps that apply to this profile, in order. */
  private readonly applicable: Step[];
  private readonly deps: Map<string, string[]>;
  private pendingCheckpoint: { at: number; hash: Hash } | undefined;
  private stepLog: ((line: string) => void) | undefined;

  constructor(
    readonly ctx: BuildCtx,
    /** Every declared step in order, also those that do not apply (they stand in keys as null). */
    private readonly steps: readonly Step[],
    opts: StageRunOptions = {},
  ) {
    this.cache = opts.cache;
    this.remote = opts.remote;
    this.log = opts.log ?? (() => {});
    if (opts.identify) this.identified = opts.identify(ctx);
    this.warningsFrom = this.cache?.warnings.length ?? 0;
    this.applicable = steps.filter((s) => s.applies(ctx.loaded.profile));
    this.deps = new Map(steps.map((s) => [s.name, dependencies(steps, s)]));
  }

  /** What went wrong with the cache and was worked around (corrupt entries dropped, a registry that did not answer). */
  get warnings(): string[] {
    return [...(this.cache?.warnings.slice(this.warningsFrom) ?? []), ...this.remoteWarnings];
  }

  /** The steps that apply, each behind the cache, for the progress display. */
  tasks(): StepTask[] {
    return this.applicable.map((s) => ({ name: s.name, run: (log) => this.runStep(s, log) }));
  }

  /** A value the steps made, if one did. */
  value<K extends ValueName>(name: K): Values[K] | undefined {
    return this.values.get(name) as Values[K] | undefined;
  }

  /** A value every build makes (stored by the cache, so present after a hit too). */
  made<K extends ValueName>(name: K): Values[K] {
    if (!this.values.has(name)) throw new OssifyError(`the build made no ${name}`);
    return this.values.get(name) as Values[K];
  }

  /** Every source the steps recorded, in step order. */
  sources(): SourceRecord[] {
    return this.applicable.flatMap((s) => this.sourcesOf.get(s.name) ?? []);
  }

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

  private async profileIdentity(): Promise<IdentifiedProfile> {
    const { loaded, cacheDir, lock } = this.ctx;
    this.identified ??= identifyProfile(loaded, { cacheDir, arch: loaded.profile.arch, ...(this.cache ? { memoDir: this.cache.root } : {}), ...(lock ? { lock } : {}) });
    return this.identified;
  }

  private async keyOf(step: Step): Promise<string> {
    const id = await this.profileIdentity();
    const slice: Record<string, unknown> = {};
    for (const path of step.reads) {
      if (path === '$epoch') slice[path] = this.ctx.loaded.epoch;
      else if (path === '$baseDigest') slice[path] = id.baseDigest;
      else if (path === '$digest') slice[path] = this.ctx.loaded.digest;
      else if (path === '$sources') slice[path] = [...new Set(this.sourcesBefore(step).map((s) => canonicalJson(s)))].sort();
      else slice[path] = pick(id.profile, path) ?? null;
    }
    // Settings no step declares count for every stage: a stale hit is worse than a rebuild.
    const unknown = Object.fromEntries(Object.keys(id.profile).filter((k) => !KNOWN_TOP.has(k)).sort().map((k) => [k, id.profile[k]]));
    return stageKey({
      format: CACHE_FORMAT,
      builder: builderIdentity(),
      step: step.name,
      version: step.version,
      slice,
      unknown,
      deps: Object.fromEntries((this.deps.get(step.name) ?? []).map((d) => [d, this.outputs.get(d) ?? null])),
    });
  }

  private sourcesBefore(step: Step): SourceRecord[] {
    return this.applicable.slice(0, this.applicable.indexOf(step)).flatMap((s) => this.sourcesOf.get(s.name) ?? []);
  }

  private async runStep(step: Step, log: (line: string) => void): Promise<void> {
    this.stepLog = log;
    if (!this.cache) {
      await this.runReal(step, log);
      this.status[step.name] = 'off';
      return;
    }
    const key = await this.keyOf(step);
    const found = await this.lookup(key);
    if (found) {
      await this.restore(step, found.record);
      this.status[step.name] = found.how;
      log(`${found.how === 'remote' ? 'remote cache hit' : 'cache hit'} ${key.slice(0, 12)}`);
      return;
    }
    await this.cache.withLock(key, async () => {
      // Another build in this process may have made it while we waited.
      const now = await this.cache!.get(key);
      if (now) {
        await this.restore(step, now);
        this.status[step.name] = 'hit';
        log(`cache hit ${key.slice(0, 12)} (made by a concurrent build)`);
        return;
      }
      log(`cache miss ${key.slice(0, 12)}`);
      const record = await this.produce(step, key, log);
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

  /** Takes a record made outside the step list (the installer image) into this build's set. */
  adopt(name: string, record: StageRecord): void {
    this.accept(name, record);
  }

  /** The step before `step` (of those that apply) that made the value it takes as `v`. */
  private producer(step: Step, v: ValueName): Step | undefined {
    return lastBefore(this.applicable, this.applicable.indexOf(step), (s) => s.makes, v);
  }

  /** Makes every value `step` takes that is not held in the state its producer left it: after a hit, heavy values are absent. */
  private async ensureInputs(step: Step, log: (l: string) => void): Promise<void> {
    for (const v of [...step.needs, ...step.mayUse]) {
      const p = this.producer(step, v);
      if (!p) {
        if (step.needs.includes(v)) throw new OssifyError(`step ${step.name} needs ${v}, which no step before it made`);
        continue;
      }
      if (this.madeBy.get(v) === p.name) continue;
      log(`making ${v}: running ${p.name} (its cached outputs do not include it)`);
      const t0 = performance.now();
      await this.runReal(p, (l) => log(`${p.name}: ${l}`));
      log(`made ${v} in ${Math.round(performance.now() - t0)} ms`);
    }
  }

  private inputsOf(step: Step): Partial<Values> {
    const input: Record<string, unknown> = {};
    for (const v of [...step.needs, ...step.mayUse]) if (this.values.has(v) && this.producer(step, v)) input[v] = this.values.get(v);
    return input as Partial<Values>;
  }

  /** Runs a step's body for real (what it takes made first) and keeps what it returns. */
  private async runReal(step: Step, log: (l: string) => void): Promise<Partial<Values>> {
    await this.ensureInputs(step, log);
    const { env, sources } = stepEnv(this.ctx, log, this.sourcesBefore(step));
    const body = () => step.run(this.inputsOf(step), env);
    let out: Partial<Values>;
    if (step.fetches) {
      const prev = inputQueue;
      let release!: () => void;
      inputQueue = new Promise<void>((r) => (release = r));
      await prev;
      try {
        out = await body();
      } finally {
        release();
      }
    } else out = await body();
    for (const k of step.makes) {
      if (out[k] === undefined) throw new OssifyError(`step ${step.name} returned no ${k}`);
      this.values.set(k, out[k]);
      this.madeBy.set(k, step.name);
    }
    this.sourcesOf.set(step.name, sources);
    return out;
  }

  /** Runs a step that missed and turns what it did into a record. */
  private async produce(step: Step, key: string, log: (l: string) => void): Promise<StageRecord> {
    // What is made on demand for it (a kernel tree for the initramfs) is the making step's output, not this one's.
    await this.ensureInputs(step, log);
    const before = await snapshot(this.ctx.work);
    const out = await this.runReal(step, log);
    const after = await snapshot(this.ctx.work);
    const cache = this.cache!;
    const files: StageRecord['files'] = {};
    for (const name of changedFiles(before, after)) {
      if (!step.writes.includes(name)) throw new OssifyError(`step ${step.name} wrote ${name}, which its declaration does not list in writes`);
      const path = join(this.ctx.work, name);
      if (SPARSE.has(name)) {
        const from = step.rewritesFrom ? await this.rewriteBase(step, name) : undefined;
        const at = step.checkpoint?.(out, this.ctx.loaded.profile);
        const { out: sparse, checkpoint } = await cache.putSparse(path, { ...(from ? { from } : {}), ...(at !== undefined ? { checkpointAt: at } : {}) });
        files[name] = sparse;
        this.digests.set(name, { sha256: sparse.sparse.sha256, size: sparse.sparse.size });
        if (checkpoint && at !== undefined) this.pendingCheckpoint = { at, hash: checkpoint };
      } else {
        const stored = await cache.putFile(path);
        files[name] = stored;
        this.digests.set(name, stored);
      }
    }
    const stored: Record<string, unknown> = {};
    const heavy: string[] = [];
    for (const k of [...step.makes].sort()) {
      const v = out[k];
      // A heavy value the step did not make (no Secure Boot keys) is stored as that.
      if (step.heavy.includes(k) && v !== null) heavy.push(k);
      else stored[k] = await this.serialize(v, `${step.name}: ${k}`);
    }
    const record: StageRecord & { heavy: string[] } = {
      format: CACHE_FORMAT,
      key,
      step: step.name,
      output: '',
      files,
      values: stored,
      sources: this.sourcesOf.get(step.name) ?? [],
      heavy,
      made: { profile: this.ctx.loaded.profile.name, ...(this.ctx.loaded.profile.site ? { site: this.ctx.loaded.profile.site.name } : {}) },
    };
    record.output = outputDigest(record);
    this.accept(step.name, record);
    return record;
  }

  /** Where a step that rewrites `name` from an offset on can scan it from: the hash state of what the earlier writer left before it. */
  private async rewriteBase(step: Step, name: string): Promise<ScanOptions['from'] | undefined> {
    const writer = lastBefore(this.applicable, this.applicable.indexOf(step), (s) => s.writes, name);
    const offset = step.rewritesFrom?.(this.inputsOf(step), this.ctx.loaded.profile);
    const rec = writer && this.records.get(writer.name);
    const image = rec?.files[name];
    if (offset === undefined || !rec || !image || !isSparse(image)) return undefined;
    const memoKey = `${rec.output}:${offset}`;
    let h = checkpoints.get(memoKey);
    if (!h) {
      h = await hashPrefix(image.sparse, offset, (c) => this.cache!.blobPath(c.sha256));
      rememberCheckpoint(memoKey, h);
    }
    return { offset, hash: h.copy(), chunks: image.sparse.chunks as SparseChunk[] };
  }

  private accept(name: string, record: StageRecord): void {
    this.records.set(name, record);
    this.outputs.set(name, record.output);
    if (this.pendingCheckpoint) {
      rememberCheckpoint(`${record.output}:${this.pendingCheckpoint.at}`, this.pendingCheckpoint.hash);
      this.pendingCheckpoint = undefined;
    }
  }

  private async restore(step: Step, record: StageRecord): Promise<void> {
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
    for (const [k, v] of Object.entries(record.values)) {
      if (!step.makes.includes(k as ValueName)) continue;
      this.values.set(k as ValueName, this.deserialize(v));
      this.madeBy.set(k as ValueName, step.name);
    }
    this.sourcesOf.set(step.name, record.sources as SourceRecord[]);
    this.accept(step.name, record);
  }

  /** JSON for the record; bytes and contents become blobs in the store. */
  private async serialize(v: unknown, what: string): Promise<unknown> {
    if (v === undefined) return { $undefined: true };
    if (v === null) return v;
    if (SECRET.test(what.split(': ').pop() ?? '')) throw new OssifyError(`stage cache: ${what} looks like a secret; declare it heavy`);
    if (typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return v;
    if (v instanceof Uint8Array) {
      const out = await this.cache!.putBytes(v);
      return { $blob: out.sha256, size: out.size, type: 'bytes' };
    }
    if (isContent(v)) {
      const out = await this.cache!.putBytes(await readContent(v));
      return { $blob: out.sha256, size: out.size, type: 'content' };
    }
    if (Array.isArray(v)) return Promise.all(v.map((x, i) => this.serialize(x, `${what}[${i}]`)));
    const proto = typeof v === 'object' ? (Object.getPrototypeOf(v) as unknown) : undefined;
    if (typeof v !== 'object' || (proto !== Object.prototype && proto !== null)) throw new OssifyError(`stage cache: ${what} cannot be stored; declare it heavy`);
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) out[k] = await this.serialize((v as Record<string, unknown>)[k], `${what}: ${k}`);
    return out;
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
