export { writeFat32, type Fat32Options, type Fat32Result } from './writer.ts';
export { readFat, FatFormatError, type FatByteReader, type FatInfo, type FatNode, type FatVolume } from './reader.ts';
export { fatGeometry, defaultClusterSize, type FatGeometry } from './geometry.ts';
export { fatTime, epochFromFat } from './dirent.ts';
export { assignShortNames, type ShortName } from './names.ts';
