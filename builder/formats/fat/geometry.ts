import { InputError } from '../../util/errors.ts';

export const SECTOR = 512;
export const RESERVED_SECTORS = 32;
export const NUM_FATS = 2;
/** Below this many clusters a volume is FAT16 by definition (Microsoft fatgen103), whatever its BPB says. */
export const MIN_FAT32_CLUSTERS = 65525;
/** Cluster numbers are 28 bits and the top values are reserved. */
export const MAX_FAT32_CLUSTERS = 0x0ffffff5;
export const ROOT_CLUSTER = 2;

export interface FatGeometry {
  totalSectors: number;
  sectorsPerCluster: number;
  clusterSize: number;
  reservedSectors: number;
  /** Sectors per FAT copy. */
  fatSectors: number;
  dataStartSector: number;
  /** Data clusters, numbered 2 … clusterCount + 1. */
  clusterCount: number;
}

/**
 * mkfs.fat's choice for FAT32 (after Microsoft's format): 512-byte clusters up to 260 MiB,
 * 4K up to 8 GiB, 8K to 16 GiB, 16K to 32 GiB, then 32K.
 */
export function defaultClusterSize(size: number): number {
  const mib = size / (1 << 20);
  if (mib > 32 * 1024) return 32768;
  if (mib > 16 * 1024) return 16384;
  if (mib > 8 * 1024) return 8192;
  if (mib > 260) return 4096;
  return 512;
}

const alignUp = (v: number, a: number) => Math.ceil(v / a) * a;

/**
 * Lays out a FAT32 volume of `size` bytes. The FAT is the smallest that addresses every
 * cluster, and (as mkfs.fat does) the reserved area and each FAT are padded to whole clusters
 * so clusters sit on cluster-size boundaries when the partition itself is aligned.
 */
export function fatGeometry(size: number, clusterSize = defaultClusterSize(size)): FatGeometry {
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0) {
    throw new InputError(`FAT: size ${size} is not a positive multiple of ${SECTOR} bytes`);
  }
  if (!Number.isInteger(clusterSize) || clusterSize < SECTOR || clusterSize > 65536 || (clusterSize & (clusterSize - 1)) !== 0) {
    throw new InputError(`FAT: cluster size ${clusterSize} is not a power of two between ${SECTOR} and 65536`);
  }
  const totalSectors = size / SECTOR;
  if (totalSectors > 0xffff_ffff) throw new InputError(`FAT: ${size} bytes exceeds FAT32's 2^32 sectors`);
  const spc = clusterSize / SECTOR;
  const reservedSectors = alignUp(RESERVED_SECTORS, spc);
  const entriesPerSector = SECTOR / 4;
  // The smallest FAT (in whole clusters) that addresses every cluster left beside it.
  const fits = (fat: number) => {
    const clusters = Math.max(0, Math.floor((totalSectors - reservedSectors - NUM_FATS * fat) / spc));
    return Math.ceil((clusters + 2) / entriesPerSector) <= fat;
  };
  let lo = 1;
  let hi = Math.max(1, Math.ceil(totalSectors / spc / entriesPerSector) + 1);
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid * spc)) hi = mid;
    else lo = mid + 1;
  }
  const fatSectors = lo * spc;
  const dataStartSector = reservedSectors + NUM_FATS * fatSectors;
  const clusterCount = Math.floor((totalSectors - dataStartSector) / spc);
  const mib = (size / (1 << 20)).toFixed(1);
  if (clusterCount < MIN_FAT32_CLUSTERS) {
    const minSize = (reservedSectors + NUM_FATS * alignUp(Math.ceil((MIN_FAT32_CLUSTERS + 2) / entriesPerSector), spc)) * SECTOR + MIN_FAT32_CLUSTERS * clusterSize;
    throw new InputError(
      `FAT: a ${size}-byte (${mib} MiB) volume has ${clusterCount} clusters of ${clusterSize} bytes; FAT32 needs at least ${MIN_FAT32_CLUSTERS}`,
      { hint: `make the volume at least ${Math.ceil(minSize / (1 << 20))} MiB${clusterSize > SECTOR ? ', or use smaller clusters' : ''}` },
    );
  }
  if (clusterCount > MAX_FAT32_CLUSTERS) throw new InputError(`FAT: ${clusterCount} clusters exceed FAT32's limit; use larger clusters`);
  return { totalSectors, sectorsPerCluster: spc, clusterSize, reservedSectors, fatSectors, dataStartSector, clusterCount };
}

export function clusterOffset(g: FatGeometry, cluster: number): number {
  return (g.dataStartSector + (cluster - 2) * g.sectorsPerCluster) * SECTOR;
}
