import { OssifyError } from '../../util/errors.ts';
import { INVALID_TABLE, SQUASHFS_MAGIC, SUPERBLOCK_SIZE } from './constants.ts';

export interface Superblock {
  inodeCount: number;
  mkfsTime: number;
  blockSize: number;
  fragmentCount: number;
  compressor: number;
  flags: number;
  idCount: number;
  rootInode: bigint;
  bytesUsed: bigint;
  idTable: bigint;
  xattrTable: bigint;
  inodeTable: bigint;
  directoryTable: bigint;
  fragmentTable: bigint;
  exportTable: bigint;
}

export function encodeSuperblock(sb: Superblock): Uint8Array {
  const b = new Uint8Array(SUPERBLOCK_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, SQUASHFS_MAGIC, true);
  dv.setUint32(4, sb.inodeCount, true);
  dv.setUint32(8, sb.mkfsTime, true);
  dv.setUint32(12, sb.blockSize, true);
  dv.setUint32(16, sb.fragmentCount, true);
  dv.setUint16(20, sb.compressor, true);
  dv.setUint16(22, Math.log2(sb.blockSize), true);
  dv.setUint16(24, sb.flags, true);
  dv.setUint16(26, sb.idCount, true);
  dv.setUint16(28, 4, true);
  dv.setUint16(30, 0, true);
  dv.setBigUint64(32, sb.rootInode, true);
  dv.setBigUint64(40, sb.bytesUsed, true);
  dv.setBigUint64(48, sb.idTable, true);
  dv.setBigUint64(56, sb.xattrTable, true);
  dv.setBigUint64(64, sb.inodeTable, true);
  dv.setBigUint64(72, sb.directoryTable, true);
  dv.setBigUint64(80, sb.fragmentTable, true);
  dv.setBigUint64(88, sb.exportTable, true);
  return b;
}

export function decodeSuperblock(b: Uint8Array): Superblock {
  if (b.length < SUPERBLOCK_SIZE) throw new OssifyError('not a squashfs image: shorter than a superblock');
  const dv = new DataView(b.buffer, b.byteOffset, SUPERBLOCK_SIZE);
  if (dv.getUint32(0, true) !== SQUASHFS_MAGIC) throw new OssifyError('not a squashfs image: bad magic');
  const major = dv.getUint16(28, true);
  const minor = dv.getUint16(30, true);
  if (major !== 4 || minor !== 0) throw new OssifyError(`unsupported squashfs version ${major}.${minor}`);
  const blockSize = dv.getUint32(12, true);
  if (1 << dv.getUint16(22, true) !== blockSize) throw new OssifyError('corrupt superblock: block size and block log disagree');
  return {
    inodeCount: dv.getUint32(4, true),
    mkfsTime: dv.getUint32(8, true),
    blockSize,
    fragmentCount: dv.getUint32(16, true),
    compressor: dv.getUint16(20, true),
    flags: dv.getUint16(24, true),
    idCount: dv.getUint16(26, true),
    rootInode: dv.getBigUint64(32, true),
    bytesUsed: dv.getBigUint64(40, true),
    idTable: dv.getBigUint64(48, true),
    xattrTable: dv.getBigUint64(56, true),
    inodeTable: dv.getBigUint64(64, true),
    directoryTable: dv.getBigUint64(72, true),
    fragmentTable: dv.getBigUint64(80, true),
    exportTable: dv.getBigUint64(88, true),
  };
}

export { INVALID_TABLE };
