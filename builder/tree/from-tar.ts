import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import { bytesContent } from './content.ts';
import { FileTree, normalizeTreePath, type Entry, type Meta } from './tree.ts';
import { InputError, OssifyError } from '../util/errors.ts';

/**
 * Reads a tar stream (ustar, GNU, PAX) into a FileTree. Archives are untrusted: every name
 * must stay inside the tree, hard links may only point at files the archive already
 * holds, and anything we cannot represent faithfully is refused rather than approximated.
 * Symlink targets are kept verbatim: they are resolved inside the image at run time, never
 * on the build host.
 */

export interface ReadTarOptions {
  /** Names the archive in errors, e.g. `deb:busybox-static` or a file path. */
  origin: string;
  /** Adds to an existing tree instead of a new one (later entries replace earlier ones). */
  into?: FileTree;
  /**
   * A raw binary xattr value (GNU tar's SCHILY.xattr, e.g. a POSIX ACL) arrives damaged:
   * refused by default; dropped when the caller strips xattrs anyway (an input's allow.xattrs off).
   */
  binaryXattrs?: 'refuse' | 'drop';
}

type PaxRecords = Record<string, string>;

function entryError(origin: string, name: string, why: string): InputError {
  return new InputError(`${origin}: tar entry ${JSON.stringify(name)}: ${why}`);
}

function treePath(origin: string, entryName: string, value: string, what: string): string {
  if (value.includes('\uFFFD')) throw entryError(origin, entryName, `${what} is not valid UTF-8`);
  if (value.startsWith('/')) throw entryError(origin, entryName, `${what} ${JSON.stringify(value)} is absolute`);
  try {
    return normalizeTreePath(value, what);
  } catch (err) {
    throw entryError(origin, entryName, (err as Error).message);
  }
}

function paxNumber(pax: PaxRecords, key: string): number | undefined {
  const v = pax[key];
  if (v === undefined || !/^-?\d+(\.\d+)?$/.test(v)) return undefined;
  return Math.floor(Number(v));
}

/**
 * Extended attributes from PAX records. libarchive base64-encodes values; GNU tar/star store
 * them raw, which tar-stream has already decoded as UTF-8, so a binary value (e.g. a file
 * capability) would arrive damaged and is refused instead.
 */
function paxXattrs(origin: string, name: string, pax: PaxRecords, binary: 'refuse' | 'drop'): Record<string, Uint8Array> | undefined {
  const out: Record<string, Uint8Array> = {};
  for (const [k, v] of Object.entries(pax)) {
    if (k.startsWith('LIBARCHIVE.xattr.')) {
      out[decodeURIComponent(k.slice('LIBARCHIVE.xattr.'.length))] = Buffer.from(v, 'base64');
    }
  }
  for (const [k, v] of Object.entries(pax)) {
    if (!k.startsWith('SCHILY.xattr.')) continue;
    const attr = k.slice('SCHILY.xattr.'.length);
    if (attr in out) continue;
    if (v.includes('\uFFFD')) {
      if (binary === 'drop') continue;
      throw entryError(origin, name, `extended attribute ${attr} has a binary value that tar-stream cannot carry`);
    }
    out[attr] = new TextEncoder().encode(v);
  }
  return Object.keys(out).length ? out : undefined;
}

async function entryBytes(entry: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const c of entry) parts.push(c);
  // A single chunk is a view into the decompressor's output buffer: no copy needed.
  if (parts.length === 1) return parts[0]!;
  return parts.length === 0 ? new Uint8Array(0) : Buffer.concat(parts);
}

function addEntry(tree: FileTree, origin: string, header: tarStream.Header, data: Uint8Array, binaryXattrs: 'refuse' | 'drop'): void {
  const rawName = header.name;
  const path = treePath(origin, rawName, rawName, 'name');
  const pax = (header.pax ?? {}) as PaxRecords;
  const meta: Meta = {
    mode: (header.mode ?? 0) & 0o7777,
    uid: paxNumber(pax, 'uid') ?? header.uid ?? 0,
    gid: paxNumber(pax, 'gid') ?? header.gid ?? 0,
    mtime: paxNumber(pax, 'mtime') ?? Math.floor((header.mtime?.getTime() ?? 0) / 1000),
  };
  const xattrs = paxXattrs(origin, rawName, pax, binaryXattrs);
  if (xattrs) meta.xattrs = xattrs;

  let entry: Entry;
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
      entry = { type: 'file', ...meta, content: bytesContent(data, `${origin}:${path}`) };
      break;
    case 'directory':
      entry = { type: 'dir', ...meta };
      break;
    case 'symlink':
      if (!header.linkname) throw entryError(origin, rawName, 'symlink without a target');
      if (header.linkname.includes('\uFFFD')) throw entryError(origin, rawName, 'symlink target is not valid UTF-8');
      entry = { type: 'symlink', ...meta, target: header.linkname };
      break;
    case 'link': {
      const target = treePath(origin, rawName, header.linkname ?? '', 'hard link target');
      if (target === path) throw entryError(origin, rawName, 'hard link to itself');
      const t = tree.resolve(target);
      if (!t) throw entryError(origin, rawName, `hard link target ${JSON.stringify(header.linkname)} is not earlier in the archive`);
      if (t.type !== 'file') throw entryError(origin, rawName, `hard link target ${JSON.stringify(header.linkname)} is a ${t.type}, not a file`);
      entry = { type: 'hardlink', target };
      break;
    }
    case 'character-device':
    case 'block-device':
      entry = {
        type: header.type === 'character-device' ? 'char' : 'block',
        ...meta,
        major: header.devmajor ?? 0,
        minor: header.devminor ?? 0,
      };
      break;
    case 'fifo':
      entry = { type: 'fifo', ...meta };
      break;
    default:
      throw entryError(origin, rawName, `unsupported entry type ${JSON.stringify(header.type ?? 'unknown')}`);
  }
  if (path === '' && entry.type !== 'dir') throw entryError(origin, rawName, 'only a directory may name the archive root');
  tree.set(path, entry);
}

export async function readTar(input: AsyncIterable<Uint8Array> | Uint8Array, opts: ReadTarOptions): Promise<FileTree> {
  const tree = opts.into ?? new FileTree();
  const source = input instanceof Uint8Array ? Readable.from([input]) : Readable.from(input, { objectMode: false });
  const extract = tarStream.extract();
  let feedError: unknown;
  const fed = new Promise<void>((resolve) => {
    source.on('error', (err) => {
      feedError = err;
      extract.destroy(err);
      resolve();
    });
    source.pipe(extract);
    extract.on('finish', () => resolve());
    extract.on('close', () => resolve());
  });
  try {
    for await (const entry of extract) {
      const data = await entryBytes(entry as unknown as AsyncIterable<Uint8Array>);
      addEntry(tree, opts.origin, entry.header, data, opts.binaryXattrs ?? 'refuse');
    }
    await fed;
    if (feedError) throw feedError;
  } catch (err) {
    source.destroy();
    extract.destroy();
    if (feedError && feedError !== err) err = feedError;
    if (err instanceof OssifyError) throw err;
    throw new InputError(`${opts.origin}: cannot read tar archive: ${(err as Error).message}`, { cause: err });
  }
  return tree;
}
