import { SquashfsReader, type Inode } from '../formats/squashfs/reader.ts';
import { FileTree, type Entry, type Meta } from '../tree/tree.ts';
import type { Content } from '../tree/content.ts';
import { OssifyError } from '../util/errors.ts';
import { ROOTFS } from '../release/artifacts.ts';

/** Where the live root sits in the installer's initramfs (the kernel unpacks every initrd there). */
export const LIVE_DIR = 'live';

/**
 * The build's root file system as a tree under `live/`, for the ISO's live-boot initrd: the
 * installer /init copies it to a tmpfs and switch_roots into it, since the ISO's kernel has no
 * loop, squashfs-on-ISO or ramdisk modules to mount the squashfs itself. File contents are
 * read from the open `reader` when the archive is written; hard links stay hard links.
 */
export async function liveTree(reader: SquashfsReader, epochMeta: Meta): Promise<FileTree> {
  const tree = new FileTree(epochMeta);
  const firstPath = new Map<number, string>();
  for await (const { path, inode } of reader.walk()) {
    const dest = path === '' ? LIVE_DIR : `${LIVE_DIR}/${path}`;
    const meta: Meta = { mode: inode.mode & 0o7777, uid: inode.uid, gid: inode.gid, mtime: inode.mtime };
    if (inode.kind === 'file' && inode.nlink > 1) {
      const first = firstPath.get(inode.ino);
      if (first !== undefined) {
        tree.set(dest, { type: 'hardlink', target: first });
        continue;
      }
      firstPath.set(inode.ino, dest);
    }
    tree.set(dest, entryFor(reader, path, inode, meta));
  }
  return tree;
}

function entryFor(reader: SquashfsReader, path: string, inode: Inode, meta: Meta): Entry {
  switch (inode.kind) {
    case 'dir':
      return { type: 'dir', ...meta };
    case 'file':
      return { type: 'file', ...meta, content: squashfsContent(reader, path, inode) };
    case 'symlink':
      return { type: 'symlink', ...meta, target: inode.target! };
    case 'char':
    case 'block':
      return { type: inode.kind, ...meta, major: inode.major!, minor: inode.minor! };
    case 'fifo':
    case 'socket':
      return { type: inode.kind, ...meta };
    default:
      throw new OssifyError(`${ROOTFS}: /${path} has an unknown kind`);
  }
}

function squashfsContent(reader: SquashfsReader, path: string, inode: Inode): Content {
  return {
    size: inode.size!,
    origin: `${ROOTFS}:/${path}`,
    stream: () => reader.readFile(inode),
  };
}
