import { parseDir, rootDir, type Dir } from './dir-parse.ts';
import { markDeleted, writeDirSlots } from './dir-slots.ts';
import { BAD, type FatTable } from './table.ts';

export interface FatProblem {
  kind: 'lost-clusters' | 'orphan-long-name' | 'cross-link' | 'bad-chain' | 'free-count' | 'fat-copies-differ';
  path: string;
  detail: string;
}

/**
 * What `fsck.fat` would complain about: the leaks and debris an interrupted change leaves.
 * With `fix`, repairs what is safe to repair (stale FAT copies, orphaned long names, leaked
 * clusters, the FSInfo free count); a cross-link or a bad chain is only reported.
 */
export async function scan(fat: FatTable, fix: boolean): Promise<FatProblem[]> {
  const { dev, clusterSize, maxCluster } = fat.vol;
  const problems: FatProblem[] = [];
  const owner = new Map<number, string>();
  const claim = (cs: number[], path: string) => {
    const shared = new Set<string>();
    for (const c of cs) {
      const other = owner.get(c);
      if (other !== undefined) shared.add(other);
      else owner.set(c, path);
    }
    for (const other of shared) problems.push({ kind: 'cross-link', path, detail: `shares clusters with ${JSON.stringify(other)}` });
  };
  if (fat.staleCopies.size > 0) {
    problems.push({ kind: 'fat-copies-differ', path: '/', detail: `${fat.staleCopies.size} sector(s) of the second FAT differ from the first` });
    if (fix) await fat.rewriteStaleCopies();
  }
  const walk = async (dir: Dir): Promise<void> => {
    claim(dir.chain, dir.path || '/');
    if (dir.orphans.length > 0) {
      problems.push({ kind: 'orphan-long-name', path: dir.path || '/', detail: `${dir.orphans.length} long-name run(s) without their short entry` });
      if (fix) {
        const slots = dir.orphans.flatMap((o) => markDeleted(dir, o.first, o.last));
        await writeDirSlots(fat, dir, slots, slots[0]!, 'first');
        await dev.sync();
      }
    }
    for (const e of dir.entries) {
      if (e.firstCluster === 0) continue;
      let cs: number[];
      try {
        cs = fat.chain(e.firstCluster, e.path);
      } catch (err) {
        problems.push({ kind: 'bad-chain', path: e.path, detail: (err as Error).message });
        continue;
      }
      if (e.isDir) await walk(await parseDir(fat, e.path, e.firstCluster, false));
      else {
        if (Math.ceil(e.size / clusterSize) !== cs.length) problems.push({ kind: 'bad-chain', path: e.path, detail: `size ${e.size} but ${cs.length} clusters` });
        claim(cs, e.path);
      }
    }
  };
  await walk(await rootDir(fat));
  const lost: number[] = [];
  for (let c = 2; c <= maxCluster; c++) {
    const v = fat.get(c);
    if (v !== 0 && v !== BAD && !owner.has(c)) lost.push(c);
  }
  if (lost.length > 0) {
    problems.push({ kind: 'lost-clusters', path: '/', detail: `${lost.length} allocated cluster(s) belong to no file` });
    if (fix) {
      fat.release(lost);
      await fat.commit();
    }
  }
  const recorded = await fat.fsInfoFree();
  if (recorded !== undefined && recorded !== fat.free && recorded !== 0xffff_ffff) {
    problems.push({ kind: 'free-count', path: '/', detail: `FSInfo says ${recorded} free clusters, there are ${fat.free}` });
    if (fix) await fat.rewriteFsInfo();
  }
  return problems;
}
