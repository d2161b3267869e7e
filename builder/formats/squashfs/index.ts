export { writeSquashfs, resolveOptions, type SquashfsOptions, type SquashfsResult } from './writer.ts';
export type { CompressionName } from './compress.ts';
export { SquashfsReader, listingLine, modeString, type Inode, type InodeKind, type DirEntry } from './reader.ts';
export { shutdownPools } from './pool.ts';
