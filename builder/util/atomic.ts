import { mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Every output is written under a temporary name beside its final name and renamed into
 * place only when complete, so a killed build never leaves a half-written file under a
 * final name. The temporary name is derived from the final one (no randomness), plus the
 * pid so two concurrent builds do not collide.
 */
export function tempPathFor(finalPath: string): string {
  return join(dirname(finalPath), `.ossify-tmp-${process.pid}-${basename(finalPath)}`);
}

export async function writeFileAtomic(finalPath: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(finalPath), { recursive: true });
  const tmp = tempPathFor(finalPath);
  try {
    await writeFile(tmp, data);
    await fsyncPath(tmp);
    await rename(tmp, finalPath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Runs `produce` against a temporary path and renames the result into place on success. */
export async function produceAtomic<T>(finalPath: string, produce: (tmpPath: string) => Promise<T>): Promise<T> {
  await mkdir(dirname(finalPath), { recursive: true });
  const tmp = tempPathFor(finalPath);
  try {
    const result = await produce(tmp);
    await fsyncPath(tmp);
    await rename(tmp, finalPath);
    return result;
  } catch (err) {
    await rm(tmp, { force: true, recursive: true });
    throw err;
  }
}

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
