import { readFile } from 'node:fs/promises';
import type { SlotVerity } from '../boot/entries.ts';
import { computeVerity, computeVerityOfRange, decodeVeritySuperblock, slotHashOffset, VERITY_SUPERBLOCK_SIZE } from '../formats/verity.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import type { Disk } from './disk.ts';
import type { ReleaseSource } from './release.ts';
import { ROOTFS, ROOTFS_VERITY } from '../release/artifacts.ts';

/**
 * dm-verity for the installers. A release with `rootfs.verity` (superblock + hash tree) and a
 * `roothash` in its release.json goes into a slot as: the root image at 0, zeros to the next
 * 4 KiB, the verity data at that offset (`slotHashOffset`). The entry's command line then
 * pins the root hash and the numbers the initramfs maps the slot with.
 *
 * Only the root hash is trusted (release.json, itself pinned by the image digest or the
 * build record); salt and block count are read from the superblock and then proven by
 * recomputing the tree: before writing (over the source file) and after writing (over what
 * the partition returns).
 */

export interface ReleaseVerity extends SlotVerity {
  /** The superblock and tree as the release ships them (rootfs.verity). */
  tree: Uint8Array;
}

const hexOf = (s: string) => s.replace(/^sha256:/, '');

/** The release's verity parameters, checked against its squashfs; undefined for a release without verity. */
export async function releaseVerity(src: ReleaseSource): Promise<ReleaseVerity | undefined> {
  const r = src.release;
  const art = r.artifacts[ROOTFS_VERITY];
  if (!art) {
    if (r.roothash !== undefined) throw new InputError(`${r.name} ${r.version} names a root hash but ships no ${ROOTFS_VERITY}`);
    return undefined;
  }
  if (r.roothash === undefined || !/^[0-9a-f]{64}$/.test(hexOf(r.roothash))) {
    throw new InputError(`${r.name} ${r.version} ships rootfs.verity but release.json has no sha256 roothash to pin it`);
  }
  const rootHash = hexOf(r.roothash);
  const tree = new Uint8Array(await readFile(src.path(ROOTFS_VERITY)));
  if (tree.length < VERITY_SUPERBLOCK_SIZE) throw new InputError(`${src.dir}/rootfs.verity is ${tree.length} bytes: no verity superblock`);
  const sb = decodeVeritySuperblock(tree);
  if (sb.algorithm !== 'sha256' || sb.dataBlockSize !== 4096 || sb.hashBlockSize !== 4096 || sb.version !== 1 || sb.hashType !== 1) {
    throw new InputError(`${src.dir}/rootfs.verity is not a verity format 1, sha256, 4096-byte-block tree (ossify's layout)`);
  }
  const size = r.artifacts[ROOTFS]!.size;
  const hashOffset = slotHashOffset(size);
  if (sb.dataBlocks !== hashOffset / 4096) {
    throw new InputError(`${src.dir}/${ROOTFS_VERITY} covers ${sb.dataBlocks} blocks, but ${ROOTFS} has ${hashOffset / 4096}`);
  }
  const salt = Buffer.from(sb.salt).toString('hex');
  const recorded = src.build?.verity as { hashOffset?: unknown; salt?: unknown } | undefined;
  if (recorded && ((recorded.hashOffset !== undefined && recorded.hashOffset !== hashOffset) || (recorded.salt !== undefined && recorded.salt !== salt))) {
    throw new InputError(`${src.dir}/build.json records other verity parameters than rootfs.verity holds`);
  }
  return { rootHash, salt, dataBlocks: sb.dataBlocks, hashOffset, tree };
}

/** Recomputes the tree over the source squashfs: the shipped tree and root hash must be its own. */
export async function checkReleaseVerity(src: ReleaseSource, v: ReleaseVerity): Promise<void> {
  const got = await computeVerity(src.path(ROOTFS), { salt: Buffer.from(v.salt, 'hex'), hashOffset: v.hashOffset });
  if (got.rootHash !== v.rootHash) {
    throw new InputError(`${ROOTFS} hashes to verity root ${got.rootHash}, but the release pins ${v.rootHash}`, { hint: 'the release is inconsistent; rebuild or pull it again' });
  }
  if (!Buffer.from(got.tree).equals(Buffer.from(v.tree))) throw new InputError(`${ROOTFS_VERITY} is not the hash tree of ${ROOTFS}`);
}

/**
 * Writes what follows the squashfs in the slot: explicit zeros up to the hash offset (the
 * partition may hold an older release there, and those bytes are hashed) and the verity data.
 */
export async function writeSlotVerity(disk: Disk, partOffset: number, dataSize: number, v: ReleaseVerity): Promise<void> {
  if (v.hashOffset > dataSize) await disk.write(partOffset + dataSize, new Uint8Array(v.hashOffset - dataSize));
  await disk.write(partOffset + v.hashOffset, v.tree);
  await disk.sync();
}

/** Reads the slot back: its data must hash to the pinned root, its tree must be the shipped one. */
export async function verifySlotVerity(disk: Disk, part: { offset: number; label: string }, v: ReleaseVerity): Promise<void> {
  const got = await computeVerityOfRange((o, l) => disk.read(part.offset + o, l), v.dataBlocks * 4096, { salt: Buffer.from(v.salt, 'hex'), hashOffset: v.hashOffset });
  if (got.rootHash !== v.rootHash) throw new OssifyError(`${part.label} reads back with verity root hash ${got.rootHash}, ${v.rootHash} was written: the disk is failing`);
  const tree = await disk.read(part.offset + v.hashOffset, v.tree.length);
  if (!Buffer.from(tree).equals(Buffer.from(v.tree))) throw new OssifyError(`${part.label}'s verity tree reads back differently than it was written: the disk is failing`);
}

/** The verity root hash of what a slot holds, given its parameters (for `status --verify`). */
export async function slotRootHash(disk: Disk, partOffset: number, v: Pick<SlotVerity, 'salt' | 'dataBlocks' | 'hashOffset'>): Promise<string> {
  return (await computeVerityOfRange((o, l) => disk.read(partOffset + o, l), v.dataBlocks * 4096, { salt: Buffer.from(v.salt, 'hex'), hashOffset: v.hashOffset })).rootHash;
}

/** Reads a verity superblock at `hashOffset` of a slot (status: what the slot says it is). */
export async function readSlotSuperblock(disk: Disk, partOffset: number, hashOffset: number): Promise<{ salt: string; dataBlocks: number } | undefined> {
  try {
    const sb = decodeVeritySuperblock(await disk.read(partOffset + hashOffset, VERITY_SUPERBLOCK_SIZE));
    return { salt: Buffer.from(sb.salt).toString('hex'), dataBlocks: sb.dataBlocks };
  } catch {
    return undefined;
  }
}
