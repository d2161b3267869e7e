import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { parentPort, Worker, type Transferable } from 'node:worker_threads';
import { OssifyError } from './errors.ts';

/**
 * Starts a worker thread on a module of ours, `entry` being the URL of its source file as
 * the caller sees it (`new URL('./x-worker.ts', import.meta.url)`). From compiled JavaScript
 * the worker is the sibling .js file. From TypeScript source (tsx, vitest) a worker thread
 * does not inherit the parent's loader, so a tiny bootstrap registers tsx's ESM loader inside
 * the worker and then imports the .ts entry; tsx is only needed in that second case (dev).
 */
export function startWorker(entry: URL, workerData: unknown): Worker {
  if (entry.href.endsWith('.ts')) {
    const boot =
      `import(${JSON.stringify(tsxEsmApi(entry))}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })` +
      `.catch((e) => { setImmediate(() => { throw e; }); });`;
    return new Worker(boot, { eval: true, workerData });
  }
  return new Worker(entry, { workerData });
}

/** The module URL a caller passes: its own `.ts` source, or the compiled `.js` beside it. */
export function siblingModule(callerUrl: string, name: string): URL {
  return new URL(`./${name}${callerUrl.endsWith('.ts') ? '.ts' : '.js'}`, callerUrl);
}

/** tsx's ESM register API as a file URL (its CommonJS twin cannot register ESM hooks here). */
function tsxEsmApi(from: URL): string {
  const cjs = createRequire(from).resolve('tsx/esm/api');
  return pathToFileURL(cjs.replace(/\.cjs$/, '.mjs')).href;
}

/** Work handed to a pool's workers; the reply is matched to its task by id. */
export interface TaskPool<Task, Reply> {
  /** Runs `task` on the least busy worker; `transfer` moves its buffers instead of copying them. */
  run(task: Task, transfer?: readonly Transferable[]): Promise<Reply>;
  /** Keeps the process alive while held, even between tasks; returns the release. */
  hold(): () => void;
  /** Stops the workers; pending tasks fail. */
  terminate(): Promise<void>;
}

export interface TaskPoolOptions {
  /** The worker module (see startWorker); it answers through serveTasks. */
  entry: URL;
  workerData?: unknown;
  threads: number;
  /** Names the workers in errors, e.g. `compression worker`. */
  name: string;
  /** Called once when the pool fails or is stopped (to forget a kept pool). */
  onFail?: (err: Error) => void;
}

type TaskMessage<Task> = { id: number; task: Task };
type ReplyMessage<Reply> = { ready: true } | { id: number; reply: Reply } | { id: number; error: string };

/**
 * Starts `threads` workers and resolves once each is ready. Workers are unref'd while the
 * pool is idle and not held, so a pool kept for later never holds the process open; a
 * worker that dies fails every pending task and the pool (its other workers stop too).
 */
export async function startTaskPool<Task, Reply>(o: TaskPoolOptions): Promise<TaskPool<Task, Reply>> {
  const slots: { w: Worker; busy: number }[] = [];
  const pending = new Map<number, { resolve(r: Reply): void; reject(e: Error): void }>();
  let nextId = 0;
  let holds = 0;
  let referenced = true;
  let failed: Error | undefined;
  const reference = () => {
    const want = holds > 0 || pending.size > 0;
    if (want === referenced) return;
    referenced = want;
    for (const s of slots) {
      if (want) s.w.ref();
      else s.w.unref();
    }
  };
  const fail = (err: Error) => {
    if (failed) return;
    failed = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    for (const s of slots) void s.w.terminate();
    o.onFail?.(err);
  };
  const ready = Array.from({ length: o.threads }, () => {
    const w = startWorker(o.entry, o.workerData);
    const slot = { w, busy: 0 };
    slots.push(slot);
    return new Promise<void>((resolve, reject) => {
      w.on('message', (m: ReplyMessage<Reply>) => {
        if ('ready' in m) return resolve();
        slot.busy--;
        const p = pending.get(m.id);
        pending.delete(m.id);
        if ('reply' in m) p?.resolve(m.reply);
        else p?.reject(new OssifyError(m.error));
        reference();
      });
      w.on('error', (e) => {
        const err = new OssifyError(`${o.name} failed: ${e.message}`, { cause: e });
        reject(err);
        fail(err);
      });
      w.on('exit', (code) => {
        const err = new OssifyError(`${o.name} exited with code ${code}`);
        reject(err);
        fail(err);
      });
    });
  });
  try {
    await Promise.all(ready);
  } catch (e) {
    await Promise.all(slots.map((s) => s.w.terminate()));
    throw e;
  }
  reference();
  return {
    run(task, transfer = []) {
      if (failed) return Promise.reject(failed);
      let best = slots[0]!;
      for (const s of slots) if (s.busy < best.busy) best = s;
      best.busy++;
      const id = nextId++;
      return new Promise<Reply>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        reference();
        best.w.postMessage({ id, task } satisfies TaskMessage<Task>, transfer);
      });
    },
    hold() {
      holds++;
      reference();
      let released = false;
      return () => {
        if (released) return;
        released = true;
        holds--;
        reference();
      };
    },
    async terminate() {
      fail(new OssifyError(`${o.name} stopped`));
      await Promise.all(slots.map((s) => s.w.terminate()));
    },
  };
}

/**
 * Pools kept for reuse: starting a worker (and, from source, its TypeScript loader) costs far
 * more than a small job, so a pool outlives the job that started it (it is unref'd while idle).
 */
const shared = new Map<string, Promise<TaskPool<never, unknown>>>();

/** The pool kept under `key`, started on first use and forgotten if it fails. */
export function sharedTaskPool<Task, Reply>(key: string, o: TaskPoolOptions): Promise<TaskPool<Task, Reply>> {
  let p = shared.get(key) as Promise<TaskPool<Task, Reply>> | undefined;
  if (p) return p;
  const forget = () => {
    if (shared.get(key) === started) shared.delete(key);
  };
  const started = startTaskPool<Task, Reply>({ ...o, onFail: forget });
  p = started;
  shared.set(key, started as Promise<TaskPool<never, unknown>>);
  started.catch(forget);
  return started;
}

/** Stops every shared pool's workers (tests and long-lived hosts may call it; nothing requires it). */
export async function shutdownTaskPools(): Promise<void> {
  const all = await Promise.allSettled([...shared.values()]);
  shared.clear();
  await Promise.all(all.map((r) => (r.status === 'fulfilled' ? r.value.terminate() : undefined)));
}

/**
 * The worker side of startTaskPool: answers each task with `handle`'s reply (its `transfer`
 * buffers moved, not copied) or the error it threw, after announcing it is ready.
 */
export function serveTasks<Task, Reply>(handle: (task: Task) => { reply: Reply; transfer?: Transferable[] }): void {
  const port = parentPort;
  if (!port) throw new OssifyError('serveTasks runs only in a worker thread');
  port.on('message', ({ id, task }: TaskMessage<Task>) => {
    let out: { reply: Reply; transfer?: Transferable[] };
    try {
      out = handle(task);
    } catch (err) {
      port.postMessage({ id, error: (err as Error).message } satisfies ReplyMessage<Reply>);
      return;
    }
    port.postMessage({ id, reply: out.reply } satisfies ReplyMessage<Reply>, out.transfer ?? []);
  });
  port.postMessage({ ready: true } satisfies ReplyMessage<Reply>);
}
