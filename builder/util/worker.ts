import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

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
