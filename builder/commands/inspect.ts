import type { Command } from 'commander';
import { open } from 'node:fs/promises';
import { SQUASHFS_MAGIC } from '../formats/squashfs/constants.ts';
import { listingLine, SquashfsReader, type Inode } from '../formats/squashfs/reader.ts';
import { InputError } from '../util/errors.ts';

/**
 * `ossify inspect IMAGE`: lists a squashfs image like `unsquashfs -lln` (times in UTC), or
 * as JSON with the superblock and every entry. Only squashfs images are understood so far.
 */
export function registerInspectCommand(program: Command): Command {
  return program
    .command('inspect')
    .description('list the contents of an image (squashfs) like unsquashfs -lls')
    .argument('<image>', 'image file')
    .option('--json', 'print superblock and entries as JSON')
    .action(async (image: string, opts: { json?: boolean }) => {
      await assertSquashfs(image);
      const r = await SquashfsReader.open(image);
      try {
        if (opts.json) {
          const entries = [];
          for await (const { path, inode } of r.walk()) entries.push(await entryJson(r, path, inode));
          const sb = r.sb;
          const superblock = {
            compression: r.compression,
            blockSize: sb.blockSize,
            inodes: sb.inodeCount,
            fragments: sb.fragmentCount,
            ids: sb.idCount,
            flags: sb.flags,
            mkfsTime: sb.mkfsTime,
            bytesUsed: Number(sb.bytesUsed),
          };
          process.stdout.write(`${JSON.stringify({ image, superblock, entries }, null, 2)}\n`);
        } else {
          // `ossify inspect img | head` is normal use: a closed pipe ends the listing quietly.
          let closed = false;
          const onError = (e: NodeJS.ErrnoException) => {
            if (e.code !== 'EPIPE') throw e;
            closed = true;
          };
          process.stdout.on('error', onError);
          const lines: string[] = [];
          for await (const { path, inode } of r.walk()) {
            if (closed) break;
            lines.push(listingLine(path, inode));
            if (lines.length >= 4096) process.stdout.write(`${lines.splice(0).join('\n')}\n`);
          }
          if (lines.length && !closed) process.stdout.write(`${lines.join('\n')}\n`);
        }
      } finally {
        await r.close();
      }
    });
}

async function assertSquashfs(image: string): Promise<void> {
  let magic: number;
  try {
    const fh = await open(image, 'r');
    try {
      const b = Buffer.alloc(4);
      const { bytesRead } = await fh.read(b, 0, 4, 0);
      magic = bytesRead === 4 ? b.readUInt32LE(0) : 0;
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw new InputError(`cannot read ${image}: ${(err as Error).message}`, { cause: err });
  }
  if (magic !== SQUASHFS_MAGIC) throw new InputError(`${image} is not a squashfs image`, { hint: 'inspect understands squashfs images' });
}

async function entryJson(r: SquashfsReader, path: string, i: Inode) {
  const x = await r.xattrs(i);
  const xattrs = Object.keys(x).length ? Object.fromEntries(Object.entries(x).map(([k, v]) => [k, Buffer.from(v).toString('base64')])) : undefined;
  return {
    path: `/${path}`,
    type: i.kind,
    mode: i.mode.toString(8).padStart(4, '0'),
    uid: i.uid,
    gid: i.gid,
    mtime: i.mtime,
    inode: i.ino,
    nlink: i.nlink,
    ...(i.kind === 'file' ? { size: i.size } : {}),
    ...(i.kind === 'symlink' ? { target: i.target } : {}),
    ...(i.kind === 'char' || i.kind === 'block' ? { major: i.major, minor: i.minor } : {}),
    ...(xattrs ? { xattrs } : {}),
  };
}
