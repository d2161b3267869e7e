/**
 * The few fields of an ext2/3/4 superblock that `ossify status` reports for the persistent /var
 * on STATE (rootfs.os.var: state): the superblock is the 1024 bytes at byte 1024 of the file
 * system, little-endian (kernel Documentation/filesystems/ext4/super.rst).
 */

export const EXT_SUPERBLOCK_OFFSET = 1024;
export const EXT_SUPERBLOCK_SIZE = 1024;
const EXT_MAGIC = 0xef53;
const INCOMPAT_64BIT = 0x80;
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_EXTENTS = 0x40;

export interface ExtSuperblock {
  /** ext4 when it uses extents (what mke2fs -t ext4 makes), ext3 with only a journal, else ext2. */
  kind: 'ext2' | 'ext3' | 'ext4';
  /** Bytes the file system spans (block count × block size). */
  size: number;
  blockSize: number;
  /** The volume label (mke2fs -L), '' when it has none. */
  label: string;
  uuid: string;
}

/** Parses the superblock (`sb`: the EXT_SUPERBLOCK_SIZE bytes at EXT_SUPERBLOCK_OFFSET); undefined when it is not one. */
export function parseExtSuperblock(sb: Uint8Array): ExtSuperblock | undefined {
  if (sb.length < EXT_SUPERBLOCK_SIZE) return undefined;
  const v = new DataView(sb.buffer, sb.byteOffset, sb.byteLength);
  if (v.getUint16(56, true) !== EXT_MAGIC) return undefined;
  const logBlock = v.getUint32(24, true);
  if (logBlock > 6) return undefined;
  const blockSize = 1024 << logBlock;
  const incompat = v.getUint32(96, true);
  const blocks = v.getUint32(4, true) + (incompat & INCOMPAT_64BIT ? v.getUint32(0x150, true) * 2 ** 32 : 0);
  const nameBytes = sb.subarray(120, 136);
  const end = nameBytes.indexOf(0);
  const hex = Buffer.from(sb.subarray(104, 120)).toString('hex');
  return {
    kind: incompat & INCOMPAT_EXTENTS ? 'ext4' : v.getUint32(92, true) & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2',
    size: blocks * blockSize,
    blockSize,
    label: new TextDecoder().decode(end < 0 ? nameBytes : nameBytes.subarray(0, end)),
    uuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
  };
}
