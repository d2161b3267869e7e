/** On-disk constants of the squashfs 4.0 format (all integers little-endian). */

export const SQUASHFS_MAGIC = 0x73717368;
export const SUPERBLOCK_SIZE = 96;
export const METADATA_SIZE = 8192;
/** Metadata block header bit: the block that follows is stored uncompressed. */
export const METADATA_UNCOMPRESSED = 0x8000;
/** Data block size bit: the block is stored uncompressed. */
export const DATA_UNCOMPRESSED = 1 << 24;
export const INVALID_TABLE = 0xffff_ffff_ffff_ffffn;
export const NO_FRAGMENT = 0xffff_ffff;
export const NO_XATTR = 0xffff_ffff;
/** The kernel refuses longer names (the on-disk field would allow more). */
export const MAX_NAME_BYTES = 256;
/** A directory header may announce at most this many entries. */
export const MAX_DIR_RUN = 256;
/** Images are padded to this so block devices (1 KiB or 4 KiB sectors) can hold them. */
export const DEVBLK_SIZE = 4096;

export enum InodeType {
  Dir = 1,
  File = 2,
  Symlink = 3,
  Block = 4,
  Char = 5,
  Fifo = 6,
  Socket = 7,
  LDir = 8,
  LFile = 9,
  LSymlink = 10,
  LBlock = 11,
  LChar = 12,
  LFifo = 13,
  LSocket = 14,
}

export enum CompressorId {
  Gzip = 1,
  Lzo = 2,
  Lzma = 3,
  Xz = 4,
  Lz4 = 5,
  Zstd = 6,
}

export enum Flag {
  InodesUncompressed = 0x0001,
  DataUncompressed = 0x0002,
  FragmentsUncompressed = 0x0008,
  NoFragments = 0x0010,
  AlwaysFragments = 0x0020,
  Duplicates = 0x0040,
  Exportable = 0x0080,
  XattrsUncompressed = 0x0100,
  NoXattrs = 0x0200,
  CompressorOptions = 0x0400,
  IdsUncompressed = 0x0800,
}

/** xattr key prefixes squashfs can store; the prefix is replaced by its id on disk. */
export const XATTR_PREFIXES = ['user.', 'trusted.', 'security.'] as const;
export const XATTR_VALUE_OOL = 0x0100;
