import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { produceAtomic } from '../util/atomic.ts';
import { sha256File } from '../util/hash.ts';
import { OUTPUTS, type ResolvedOutput } from './index.ts';
import type { OutputContext, OutputFormat, WrittenOutput } from './types.ts';

/**
 * Writes each asked-for format from the built disk into the build directory, under a
 * temporary name renamed into place when complete, and returns what build.json lists: each
 * file with its sha256 and size (taken while writing, or read back).
 */
export async function writeOutputs(outputs: readonly ResolvedOutput[], ctx: Omit<OutputContext, 'made'>, log: (line: string) => void = () => {}): Promise<WrittenOutput[]> {
  const made = new Map<string, WrittenOutput>();
  for (const { format, options } of outputs) {
    const f: OutputFormat = OUTPUTS[format];
    const dest = join(ctx.dir, f.file);
    let written: WrittenOutput;
    if (f.builtIn) {
      written = { format, file: f.file, sha256: ctx.disk.sha256, size: ctx.disk.size };
    } else {
      const t0 = performance.now();
      const { write } = await f.load!();
      const digest = await produceAtomic(dest, (tmp) => write(tmp, { ...ctx, made }, options));
      written = { format, file: f.file, ...(digest ?? { sha256: await sha256File(dest), size: (await stat(dest)).size }) };
      log(`${f.file}: ${written.size} bytes in ${Math.round(performance.now() - t0)} ms`);
    }
    made.set(format, written);
  }
  return [...made.values()];
}
