import { FatFormatError } from '../reader.ts';

export interface FatDevice {
  /** Reads `length` bytes at `offset` of the volume. */
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every write so far durable (fsync); called at each ordering point. */
  sync(): Promise<void>;
}

export const SECTOR = 512;
const WRITE_CHUNK = 4 << 20;

/** A FAT32 volume's layout from its boot sector, and reads and writes of whole clusters. */
export class Volume {
  private constructor(
    readonly dev: FatDevice,
    readonly clusterSize: number,
    /** In sectors: the reserved area, before the first FAT. */
    readonly reserved: number,
    readonly numFats: number,
    readonly fatSectors: number,
    readonly dataStart: number,
    readonly clusterCount: number,
    readonly rootCluster: number,
    readonly fsInfoSector: number,
  ) {}

  static async open(dev: FatDevice): Promise<Volume> {
    const bs = Buffer.from(await dev.read(0, SECTOR));
    if (bs[510] !== 0x55 || bs[511] !== 0xaa) throw new FatFormatError('boot sector lacks the 55 AA signature');
    const bps = bs.readUInt16LE(11);
    if (bps !== SECTOR) throw new FatFormatError(`${bps}-byte sectors; only 512 is supported for in-place changes`);
    const spc = bs[13]!;
    if (spc === 0 || (spc & (spc - 1)) !== 0) throw new FatFormatError(`implausible sectors per cluster ${spc}`);
    if (bs.readUInt16LE(17) !== 0 || bs.readUInt16LE(22) !== 0) throw new FatFormatError('not FAT32');
    const reserved = bs.readUInt16LE(14);
    const numFats = bs[16]!;
    const totalSectors = bs.readUInt16LE(19) || bs.readUInt32LE(32);
    const fatSectors = bs.readUInt32LE(36);
    const extFlags = bs.readUInt16LE(40);
    // Bit 7: only one FAT is active (the others are stale). Mirroring is all this editor does.
    if (extFlags & 0x80) throw new FatFormatError('FAT mirroring is disabled on this volume; refusing to modify it');
    const rootCluster = bs.readUInt32LE(44);
    const fsInfoSector = bs.readUInt16LE(48);
    const dataStart = reserved + numFats * fatSectors;
    const clusterCount = Math.floor((totalSectors - dataStart) / spc);
    if (numFats < 1 || fatSectors * (SECTOR / 4) < clusterCount + 2) throw new FatFormatError(`FAT of ${fatSectors} sectors cannot map ${clusterCount} clusters`);
    return new Volume(dev, SECTOR * spc, reserved, numFats, fatSectors, dataStart, clusterCount, rootCluster, fsInfoSector);
  }

  /** The highest valid cluster number (clusters start at 2). */
  get maxCluster(): number {
    return this.clusterCount + 1;
  }

  /** Whether the boot sector names an FSInfo sector inside the reserved area. */
  get hasFsInfo(): boolean {
    return this.fsInfoSector > 0 && this.fsInfoSector < this.reserved;
  }

  clusterPos(c: number): number {
    return (this.dataStart + (c - 2) * (this.clusterSize / SECTOR)) * SECTOR;
  }

  /** The first `length` bytes held by the clusters, one read per contiguous run. */
  async readClusters(cs: number[], length: number): Promise<Buffer> {
    const out = Buffer.alloc(length);
    let o = 0;
    for (let i = 0; i < cs.length && o < length; ) {
      const j = runEnd(cs, i);
      const n = Math.min((j - i) * this.clusterSize, length - o);
      out.set(await this.dev.read(this.clusterPos(cs[i]!), n), o);
      o += n;
      i = j;
    }
    return out;
  }

  /** Writes `data` over the clusters, one write per contiguous run, zero-padding the last cluster. */
  async writeClusters(cs: number[], data: Uint8Array): Promise<void> {
    let o = 0;
    for (let i = 0; i < cs.length; ) {
      const j = runEnd(cs, i);
      const runBytes = (j - i) * this.clusterSize;
      const base = this.clusterPos(cs[i]!);
      for (let k = 0; k < runBytes; k += WRITE_CHUNK) {
        const n = Math.min(WRITE_CHUNK, runBytes - k);
        let piece = data.subarray(Math.min(o + k, data.length), Math.min(o + k + n, data.length));
        if (piece.length < n) {
          const padded = new Uint8Array(n);
          padded.set(piece);
          piece = padded;
        }
        await this.dev.write(base + k, piece);
      }
      o += runBytes;
      i = j;
    }
  }
}

/** The index after the run of consecutive cluster numbers starting at `cs[i]`. */
function runEnd(cs: number[], i: number): number {
  let j = i + 1;
  while (j < cs.length && cs[j] === cs[j - 1]! + 1) j++;
  return j;
}
