import { scan, type FatProblem } from './edit/check.ts';
import { lookupEntry, openDir } from './edit/dir-entries.ts';
import { publicEntry, splitPath, type FatEntry } from './edit/dir-parse.ts';
import { mkdirp, readFile, remove, replaceFile, writeFile } from './edit/files.ts';
import { rename } from './edit/rename.ts';
import { FatTable } from './edit/table.ts';
import { Volume, type FatDevice } from './edit/volume.ts';
import { FatFormatError } from './reader.ts';

export type { FatDevice, FatEntry, FatProblem };

/**
 * In-place changes to an existing FAT32 volume (an ESP on a disk or block device), made so
 * that a process killed at any point leaves a volume every FAT driver still reads the same
 * way as before or after the change, and `fsck.fat -n` finds nothing to fix once an
 * operation has returned.
 *
 * FAT has no journal, so ordering is the whole story. Each operation writes in this order and
 * syncs the device between the stages:
 *
 * - new file: data into free clusters → FAT chain (both copies) and FSInfo → directory entry.
 *   Until the entry exists the clusters are a leak nobody reads; `repair()` reclaims them.
 * - delete: the sector holding the short entry (the file vanishes in one write) → the rest
 *   of its long-name entries → the chain freed in the FAT.
 * - rename within a directory: the new long-name and short entries are written over the old
 *   run of entries when they fit in it (pick a temporary name at least as long as the final
 *   one and they do), and every run this editor creates lies inside one 512-byte sector, so
 *   the rename is one sector write: the file has the old name or the new one, never both or
 *   neither. This is the primitive an A/B switch is built on.
 * - replace content: new chain written and linked (and, asked to, read back and compared) →
 *   the short entry's first cluster and size rewritten (one sector) → old chain freed.
 *
 * Allocation is first-fit from cluster 2 and the lowest free directory slots, never the
 * FSInfo hint, so the same change to the same volume yields the same bytes.
 */

export interface FatEditor {
  readonly clusterSize: number;
  freeBytes(): number;
  /** Bytes of clusters a file of `size` bytes occupies. */
  allocationFor(size: number): number;
  list(dir: string): Promise<FatEntry[]>;
  stat(path: string): Promise<FatEntry | undefined>;
  readFile(path: string): Promise<Uint8Array>;
  /** Creates the directory and any missing parents; existing ones are left alone. */
  mkdirp(path: string, opts: { mtime: number }): Promise<void>;
  /** Creates a new file; refuses to overwrite one. */
  writeFile(path: string, data: Uint8Array, opts: { mtime: number }): Promise<void>;
  /** Removes a file or an empty directory; false when it did not exist. */
  remove(path: string): Promise<boolean>;
  /** Renames within the file's directory; refuses when `newName` exists. */
  rename(path: string, newName: string): Promise<void>;
  /**
   * Swaps a file's content for `data` with a single directory-entry write. With `verify`, the
   * new clusters are read back and compared before that write: a medium that returns other
   * bytes fails the call with the file still holding its old content.
   */
  replaceFile(path: string, data: Uint8Array, opts: { mtime: number; verify?: boolean }): Promise<void>;
  /** What `fsck.fat` would complain about (leaks and debris an interrupted change leaves). */
  check(): Promise<FatProblem[]>;
  /** Fixes what `check` finds that is safe to fix (leaked clusters, orphaned long names, the free count). */
  repair(): Promise<FatProblem[]>;
}

/** Opens a FAT32 volume for in-place changes (each module under `edit/` does one part). */
export async function openFatEditor(dev: FatDevice): Promise<FatEditor> {
  const fat = await FatTable.load(await Volume.open(dev));
  const { clusterSize } = fat.vol;
  return {
    clusterSize,
    freeBytes: () => fat.free * clusterSize,
    allocationFor: (size) => Math.ceil(size / clusterSize) * clusterSize,
    list: async (path) => (await openDir(fat, path)).entries.map(publicEntry),
    async stat(path) {
      if (splitPath(path).length === 0) return undefined;
      try {
        const { entry } = await lookupEntry(fat, path);
        return entry && publicEntry(entry);
      } catch (err) {
        if (err instanceof FatFormatError && /^FAT: no directory/.test(err.message)) return undefined;
        throw err;
      }
    },
    readFile: (path) => readFile(fat, path),
    mkdirp: (path, opts) => mkdirp(fat, path, opts.mtime),
    writeFile: (path, data, opts) => writeFile(fat, path, data, opts.mtime),
    remove: (path) => remove(fat, path),
    rename: (path, newName) => rename(fat, path, newName),
    replaceFile: (path, data, opts) => replaceFile(fat, path, data, opts),
    check: () => scan(fat, false),
    repair: () => scan(fat, true),
  };
}
