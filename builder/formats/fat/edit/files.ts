import { OssifyError } from '../../../util/errors.ts';
import { ATTR_ARCHIVE, ATTR_DIRECTORY, DIRENT_SIZE, encodeShortEntry } from '../dirent.ts';
import { FatFormatError } from '../reader.ts';
import { findIn, joinPath, parseDir, rootDir, splitPath } from './dir-parse.ts';
import { addEntry, lookupEntry, openDir, parentOf, shortNameFor } from './dir-entries.ts';
import { markDeleted, writeDirSlots } from './dir-slots.ts';
import type { FatTable } from './table.ts';

/** Files and directories made, replaced and removed, each in the crash-safe order mutate.ts describes. */

export async function readFile(fat: FatTable, path: string): Promise<Uint8Array> {
  const { entry } = await lookupEntry(fat, path);
  if (!entry || entry.isDir) throw new FatFormatError(`no file ${JSON.stringify(path)}`);
  if (entry.size === 0) return new Uint8Array(0);
  return fat.vol.readClusters(fat.chain(entry.firstCluster, entry.path), entry.size);
}

/** Data into free clusters, then the chain linked in the FAT: until then the clusters are free. */
async function writeNewChain(fat: FatTable, data: Uint8Array, what: string): Promise<number[]> {
  const cs = fat.pick(Math.ceil(data.length / fat.vol.clusterSize), what);
  await fat.vol.writeClusters(cs, data);
  await fat.vol.dev.sync();
  fat.link(cs);
  await fat.commit();
  return cs;
}

export async function mkdirp(fat: FatTable, path: string, mtime: number): Promise<void> {
  const { dev, clusterSize } = fat.vol;
  let dir = await rootDir(fat);
  for (const seg of splitPath(path)) {
    let e = findIn(dir, seg);
    if (!e) {
      const [c] = fat.pick(1, `directory ${JSON.stringify(joinPath(dir.path, seg))}`);
      const body = new Uint8Array(clusterSize);
      body.set(encodeShortEntry({ raw: '.'.padEnd(11), attr: ATTR_DIRECTORY, caseFlags: 0, cluster: c!, size: 0, mtime }), 0);
      // `..` of a directory in the root names cluster 0 (fatgen103).
      body.set(encodeShortEntry({ raw: '..'.padEnd(11), attr: ATTR_DIRECTORY, caseFlags: 0, cluster: dir.isRoot ? 0 : dir.firstCluster, size: 0, mtime }), DIRENT_SIZE);
      await dev.write(fat.vol.clusterPos(c!), body);
      await dev.sync();
      fat.link([c!]);
      await fat.commit();
      await addEntry(fat, dir, seg, { attr: ATTR_DIRECTORY, cluster: c!, size: 0, mtime });
      dir = await parseDir(fat, dir.path, dir.firstCluster, dir.isRoot);
      e = findIn(dir, seg)!;
    }
    if (!e.isDir) throw new OssifyError(`FAT: ${JSON.stringify(e.path)} is a file, not a directory`);
    dir = await parseDir(fat, e.path, e.firstCluster, false);
  }
}

export async function writeFile(fat: FatTable, path: string, data: Uint8Array, mtime: number): Promise<void> {
  const { dir, name } = parentOf(path);
  const d = await openDir(fat, dir);
  if (findIn(d, name)) throw new OssifyError(`FAT: ${JSON.stringify(path)} already exists`);
  if (data.length > 0xffff_ffff) throw new OssifyError(`FAT: ${JSON.stringify(path)} is ${data.length} bytes; FAT32 files stop at 4 GiB - 1`);
  shortNameFor(d, name); // refuse a bad name before any cluster is written
  const cs = await writeNewChain(fat, data, JSON.stringify(path));
  await addEntry(fat, d, name, { attr: ATTR_ARCHIVE, cluster: cs[0] ?? 0, size: data.length, mtime });
}

export async function remove(fat: FatTable, path: string): Promise<boolean> {
  const { dir, entry } = await lookupEntry(fat, path);
  if (!entry) return false;
  let cs: number[] = [];
  // A rename interrupted half-way (by this editor or an OS driver) leaves two names for
  // one chain: dropping one name must not free the clusters the other still uses.
  const shared = dir.entries.some((e) => e !== entry && e.firstCluster !== 0 && e.firstCluster === entry.firstCluster);
  if (entry.firstCluster !== 0 && !shared) cs = fat.chain(entry.firstCluster, entry.path);
  if (entry.isDir) {
    const inner = await parseDir(fat, entry.path, entry.firstCluster, false);
    if (inner.entries.length > 0) throw new OssifyError(`FAT: directory ${JSON.stringify(path)} is not empty`);
  }
  const slots = markDeleted(dir, entry.firstSlot, entry.shortSlot);
  await writeDirSlots(fat, dir, slots, entry.shortSlot, 'first');
  await fat.vol.dev.sync();
  if (cs.length > 0) {
    fat.release(cs);
    await fat.commit();
  }
  return true;
}

export async function replaceFile(fat: FatTable, path: string, data: Uint8Array, opts: { mtime: number; verify?: boolean }): Promise<void> {
  const { dir, entry } = await lookupEntry(fat, path);
  if (!entry || entry.isDir) throw new FatFormatError(`no file ${JSON.stringify(path)}`);
  const oldChain = entry.firstCluster === 0 ? [] : fat.chain(entry.firstCluster, entry.path);
  const cs = await writeNewChain(fat, data, JSON.stringify(path));
  if (opts.verify && data.length > 0 && !Buffer.from(await fat.vol.readClusters(cs, data.length)).equals(Buffer.from(data.buffer, data.byteOffset, data.byteLength))) {
    fat.release(cs);
    await fat.commit();
    throw new OssifyError(`FAT: ${JSON.stringify(path)} reads back differently than it was written: the medium is failing`);
  }
  const e = encodeShortEntry({ raw: entry.shortRaw, attr: entry.attr, caseFlags: dir.bytes[entry.shortSlot * DIRENT_SIZE + 12]!, cluster: cs[0] ?? 0, size: data.length, mtime: opts.mtime });
  dir.bytes.set(e, entry.shortSlot * DIRENT_SIZE);
  await writeDirSlots(fat, dir, [entry.shortSlot], entry.shortSlot, 'first');
  await fat.vol.dev.sync();
  if (oldChain.length > 0) {
    fat.release(oldChain);
    await fat.commit();
  }
}
