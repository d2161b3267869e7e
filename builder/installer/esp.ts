import { createHash } from 'node:crypto';
import { openFatEditor, type FatEditor } from '../formats/fat/mutate.ts';
import { OssifyError } from '../util/errors.ts';
import { TEMP_SUFFIX, type BootState } from './boot-state.ts';
import { partitionIo, type Disk } from './disk.ts';
import type { OssifyLayout } from './layout.ts';

/** The ESP of an ossify disk as an in-place FAT editor. */
export async function openEsp(disk: Disk, layout: OssifyLayout): Promise<FatEditor> {
  return openFatEditor(partitionIo(disk, layout.esp));
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/**
 * Puts a complete, verified file at `path`: written under `<path>.ossify-tmp`, read back and
 * compared, then renamed in place (one directory-sector write). `path` must not exist.
 * The temporary name is longer than the final one, so the rename always fits in place.
 */
export async function putFileAtomic(esp: FatEditor, path: string, data: Uint8Array, mtime: number): Promise<void> {
  const tmp = `${path}${TEMP_SUFFIX}`;
  await stageFile(esp, tmp, data, mtime);
  await esp.rename(tmp, path.slice(path.lastIndexOf('/') + 1));
}

/** Writes `path` fresh (replacing a stale one) and checks that the ESP returns the same bytes. */
export async function stageFile(esp: FatEditor, path: string, data: Uint8Array, mtime: number): Promise<void> {
  await esp.remove(path);
  await esp.writeFile(path, data, { mtime });
  const back = await esp.readFile(path);
  if (sha(back) !== sha(data)) throw new OssifyError(`the ESP returned different bytes for ${path} than were written: the medium is failing`);
}

/**
 * Removes what an interrupted run left (temporary files, leaked clusters, orphaned long
 * names) so every run starts from a volume fsck.fat finds clean. None of it is referenced by
 * a loader entry, so removing it never changes what boots.
 */
export async function cleanEsp(esp: FatEditor, state: BootState): Promise<string[]> {
  const done: string[] = [];
  for (const path of state.leftovers) {
    await esp.remove(path);
    done.push(`removed ${path}`);
  }
  for (const p of await esp.repair()) done.push(`repaired ${p.kind} in ${p.path}: ${p.detail}`);
  return done;
}
