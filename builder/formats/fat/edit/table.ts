import { OssifyError } from '../../../util/errors.ts';
import { FatFormatError } from '../reader.ts';
import { SECTOR, type Volume } from './volume.ts';

export const EOC = 0x0fff_ffff;
export const BAD = 0x0fff_fff7;
const CLUSTER_MASK = 0x0fff_ffff;
const FSINFO_LEAD = 0x41615252;
const FSINFO_STRUCT = 0x61417272;

/**
 * The file allocation table held in memory: chains, first-fit allocation and the free count.
 * Changes mark their sectors dirty; `commit` writes them to every FAT copy and FSInfo, then syncs.
 */
export class FatTable {
  /** Free clusters, kept in step with every link and release. */
  free = 0;
  private readonly dirty = new Set<number>();

  private constructor(
    readonly vol: Volume,
    private readonly fat: Buffer,
    /** FAT sectors where a later copy differs from the first. */
    readonly staleCopies: Set<number>,
  ) {
    for (let c = 2; c <= vol.maxCluster; c++) if (this.get(c) === 0) this.free++;
  }

  static async load(vol: Volume): Promise<FatTable> {
    const { dev, reserved, fatSectors, numFats } = vol;
    const fat = Buffer.from(await dev.read(reserved * SECTOR, fatSectors * SECTOR));
    // A change killed between writing the first FAT and the second leaves them different;
    // the first is the one every driver (and fsck.fat) trusts, so it is the one kept.
    const staleCopies = new Set<number>();
    for (let copy = 1; copy < numFats; copy++) {
      const other = Buffer.from(await dev.read((reserved + copy * fatSectors) * SECTOR, fatSectors * SECTOR));
      for (let sec = 0; sec < fatSectors; sec++) {
        if (!fat.subarray(sec * SECTOR, (sec + 1) * SECTOR).equals(other.subarray(sec * SECTOR, (sec + 1) * SECTOR))) staleCopies.add(sec);
      }
    }
    return new FatTable(vol, fat, staleCopies);
  }

  get(c: number): number {
    return this.fat.readUInt32LE(c * 4) & CLUSTER_MASK;
  }

  set(c: number, v: number): void {
    // The top four bits are reserved: keep whatever is there.
    this.fat.writeUInt32LE(((this.fat.readUInt32LE(c * 4) & ~CLUSTER_MASK) | v) >>> 0, c * 4);
    this.dirty.add(Math.floor((c * 4) / SECTOR));
  }

  /** The clusters of the chain starting at `first`; a broken chain is an error naming `what`. */
  chain(first: number, what: string): number[] {
    const out: number[] = [];
    let c = first;
    for (;;) {
      if (c < 2 || c > this.vol.maxCluster) throw new FatFormatError(`${what}: chain from cluster ${first} reaches invalid cluster ${c}`);
      out.push(c);
      if (out.length > this.vol.clusterCount) throw new FatFormatError(`${what}: chain from cluster ${first} loops`);
      const n = this.get(c);
      if (n >= 0x0fff_fff8) return out;
      if (n === 0 || n === BAD) throw new FatFormatError(`${what}: chain from cluster ${first} hits ${n === 0 ? 'a free' : 'a bad'} cluster at ${c}`);
      c = n;
    }
  }

  /** First-fit: the lowest contiguous run that fits, else the lowest free clusters. */
  pick(n: number, what: string): number[] {
    if (n === 0) return [];
    const { clusterSize, maxCluster } = this.vol;
    if (n > this.free) {
      throw new OssifyError(`FAT: no room for ${what}: it needs ${n * clusterSize} bytes, ${this.free * clusterSize} are free`, {
        hint: 'use a larger ESP (disk.esp in the profile)',
      });
    }
    let runStart = 0;
    let runLen = 0;
    for (let c = 2; c <= maxCluster; c++) {
      if (this.get(c) !== 0) {
        runLen = 0;
        continue;
      }
      if (runLen === 0) runStart = c;
      if (++runLen === n) return Array.from({ length: n }, (_, i) => runStart + i);
    }
    const out: number[] = [];
    for (let c = 2; c <= maxCluster && out.length < n; c++) if (this.get(c) === 0) out.push(c);
    return out;
  }

  /** Chains the clusters in order, the last one ending the chain. */
  link(cs: number[]): void {
    cs.forEach((c, i) => this.set(c, i + 1 < cs.length ? cs[i + 1]! : EOC));
    this.free -= cs.length;
  }

  release(cs: number[]): void {
    for (const c of cs) this.set(c, 0);
    this.free += cs.length;
  }

  /** Writes the dirty sectors to every FAT copy and the free count to FSInfo, then syncs. */
  async commit(): Promise<void> {
    await this.flush();
    await this.vol.dev.sync();
  }

  /** Makes the later FAT copies equal to the first again. */
  async rewriteStaleCopies(): Promise<void> {
    for (const sec of this.staleCopies) this.dirty.add(sec);
    await this.commit();
    this.staleCopies.clear();
  }

  /** Rewrites FSInfo's free count (and a FAT sector, unchanged) when it disagrees. */
  async rewriteFsInfo(): Promise<void> {
    this.dirty.add(0);
    await this.commit();
  }

  /** FSInfo's free cluster count, or undefined when the volume has no valid FSInfo. */
  async fsInfoFree(): Promise<number | undefined> {
    const fi = await this.readFsInfo();
    return fi && fi.readUInt32LE(488);
  }

  private async readFsInfo(): Promise<Buffer | undefined> {
    if (!this.vol.hasFsInfo) return undefined;
    const fi = Buffer.from(await this.vol.dev.read(this.vol.fsInfoSector * SECTOR, SECTOR));
    return fi.readUInt32LE(0) === FSINFO_LEAD ? fi : undefined;
  }

  private async flush(): Promise<void> {
    if (this.dirty.size === 0) return;
    const { dev, reserved, fatSectors, numFats, fsInfoSector } = this.vol;
    const sectors = [...this.dirty].sort((a, b) => a - b);
    for (let copy = 0; copy < numFats; copy++) {
      const base = (reserved + copy * fatSectors) * SECTOR;
      for (const s of sectors) await dev.write(base + s * SECTOR, this.fat.subarray(s * SECTOR, (s + 1) * SECTOR));
    }
    this.dirty.clear();
    const fi = await this.readFsInfo();
    if (fi && fi.readUInt32LE(484) === FSINFO_STRUCT) {
      fi.writeUInt32LE(this.free, 488);
      fi.writeUInt32LE(this.firstFree() ?? 0xffff_ffff, 492);
      await dev.write(fsInfoSector * SECTOR, fi);
    }
  }

  private firstFree(): number | undefined {
    for (let c = 2; c <= this.vol.maxCluster; c++) if (this.get(c) === 0) return c;
    return undefined;
  }
}
