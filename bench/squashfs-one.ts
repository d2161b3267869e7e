/**
 * One timed ossify squashfs run, in a process of its own so the squashfs bench can run it
 * under each Node.js it compares: scan and write (worker start-up included, Node start-up
 * not), reported as JSON on stdout. Arguments: DIR OUT COMP LEVEL THREADS GZIP_ENGINE.
 */
import { writeSquashfs } from '../builder/formats/squashfs/index.ts';
import { shutdownPools } from '../builder/formats/squashfs/pool.ts';
import type { CompressionName, GzipEngine } from '../builder/formats/squashfs/compress.ts';
import { loadTreeFromHost } from '../builder/tree/from-host.ts';

const [dir, out, comp, level, threads, gzipEngine] = process.argv.slice(2);
if (!dir || !out || !comp || !level || !threads || !gzipEngine) throw new Error('usage: squashfs-one DIR OUT COMP LEVEL THREADS GZIP_ENGINE');
const t0 = performance.now();
const c0 = process.cpuUsage();
const tree = await loadTreeFromHost(dir);
const r = await writeSquashfs(tree, out, {
  compression: comp as CompressionName,
  level: Number(level),
  blockSize: 131072,
  threads: Number(threads),
  gzipEngine: gzipEngine as GzipEngine,
});
const seconds = (performance.now() - t0) / 1000;
const cu = process.cpuUsage(c0); // every thread of this process, compression workers included
await shutdownPools();
process.stdout.write(JSON.stringify({ seconds, cpu: (cu.user + cu.system) / 1e6, bytes: r.bytes, engine: r.engine }));
