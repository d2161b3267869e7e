import { concatBytes } from '../util/bytes.ts';
import type { Content } from '../tree/content.ts';
import { compareBytes, normalizeTreePath } from '../tree/tree.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { mergeRuns, type BlockSource } from './blocks.ts';

/**
 * Deterministic POSIX tar (ustar, PAX extended headers only when a name, link target or size
 * does not fit). Everything that could vary between hosts is fixed: entries sorted by byte
 * order, one mtime, uid/gid 0, no user or group names, no device numbers.
 */
export type TarEntry =
  | { type: 'file'; path: string; mode: number; content: Content }
  | { type: 'dir'; path: string; mode: number }
  | { type: 'symlink'; path: string; target: string };

export interface TarWriteOptions {
  /** Seconds since the epoch, written for every entry (SOURCE_DATE_EPOCH). */
  mtime: number;
  /** Keep the entries in the order given (an OVA must start with its OVF descriptor) instead of byte order. */
  keepOrder?: boolean;
}

const BLOCK = 512;
const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: false });
const ZERO_BLOCKS = new Uint8Array(2 * BLOCK);
const MAX_OCTAL_SIZE = 0o77777777777; // 11 octal digits: 8 GiB - 1

function writeString(buf: Uint8Array, off: number, len: number, s: string | Uint8Array): void {
  const b = typeof s === 'string' ? enc.encode(s) : s;
  if (b.length > len) throw new RangeError(`tar field overflow (${b.length} > ${len})`);
  buf.set(b, off);
}

function writeOctal(buf: Uint8Array, off: number, len: number, n: number): void {
  // len-1 digits and a NUL, the form GNU tar and bsdtar both write.
  writeString(buf, off, len, n.toString(8).padStart(len - 1, '0') + '\0');
}

/** GNU base-256 for numbers too large for octal; readers that know PAX never look at it. */
function writeBase256(buf: Uint8Array, off: number, len: number, n: number): void {
  let v = BigInt(n);
  for (let i = off + len - 1; i > off; i--) {
    buf[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  buf[off] = 0x80;
}

interface RawHeader {
  name: Uint8Array;
  prefix?: Uint8Array;
  mode: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname?: Uint8Array;
}

function encodeHeader(h: RawHeader): Uint8Array {
  const b = new Uint8Array(BLOCK);
  writeString(b, 0, 100, h.name);
  writeOctal(b, 100, 8, h.mode & 0o7777);
  writeOctal(b, 108, 8, 0);
  writeOctal(b, 116, 8, 0);
  if (h.size > MAX_OCTAL_SIZE) writeBase256(b, 124, 12, h.size);
  else writeOctal(b, 124, 12, h.size);
  writeOctal(b, 136, 12, h.mtime);
  b.fill(0x20, 148, 156);
  writeString(b, 156, 1, h.typeflag);
  if (h.linkname) writeString(b, 157, 100, h.linkname);
  writeString(b, 257, 8, 'ustar\u000000');
  writeOctal(b, 329, 8, 0);
  writeOctal(b, 337, 8, 0);
  if (h.prefix) writeString(b, 345, 155, h.prefix);
  let sum = 0;
  for (const x of b) sum += x;
  writeString(b, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  return b;
}

/** Splits a path into ustar prefix/name, or undefined when it needs a PAX `path`. */
function splitUstarName(p: Uint8Array): { name: Uint8Array; prefix?: Uint8Array } | undefined {
  if (p.length <= 100) return { name: p };
  // The split must be at a '/', with at most 155 bytes before it and 100 after.
  for (let i = Math.min(p.length - 1, 155); i > 0; i--) {
    if (p[i] === 0x2f && p.length - i - 1 <= 100 && p.length - i - 1 > 0) {
      return { prefix: p.subarray(0, i), name: p.subarray(i + 1) };
    }
  }
  return undefined;
}

function paxRecord(key: string, value: string): Uint8Array {
  const body = ` ${key}=${value}\n`;
  const bodyLen = enc.encode(body).length;
  // The length prefix counts its own digits.
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return enc.encode(`${len}${body}`);
}

function padding(size: number): Uint8Array | undefined {
  const r = size % BLOCK;
  return r === 0 ? undefined : new Uint8Array(BLOCK - r);
}

function headersFor(path: string, typeflag: string, mode: number, size: number, mtime: number, link?: string): Uint8Array[] {
  const pathBytes = enc.encode(path);
  const linkBytes = link === undefined ? undefined : enc.encode(link);
  const split = splitUstarName(pathBytes);
  const pax: Uint8Array[] = [];
  if (!split) pax.push(paxRecord('path', path));
  if (linkBytes && linkBytes.length > 100) pax.push(paxRecord('linkpath', link!));
  if (size > MAX_OCTAL_SIZE) pax.push(paxRecord('size', String(size)));
  const out: Uint8Array[] = [];
  if (pax.length > 0) {
    const body = concat(pax);
    const base = pathBytes.subarray(Math.max(0, pathBytes.length - 80));
    out.push(encodeHeader({ name: concat([enc.encode('PaxHeaders/'), safeTail(base)]), mode: 0o644, size: body.length, mtime, typeflag: 'x' }));
    out.push(body);
    const pad = padding(body.length);
    if (pad) out.push(pad);
  }
  const name = split ?? { name: pathBytes.subarray(0, 100) };
  const h: RawHeader = { name: name.name, mode, size, mtime, typeflag };
  if (name.prefix) h.prefix = name.prefix;
  if (linkBytes) h.linkname = linkBytes.length > 100 ? linkBytes.subarray(0, 100) : linkBytes;
  out.push(encodeHeader(h));
  return out;
}

/** The last bytes of a name, not starting inside a UTF-8 sequence. */
function safeTail(b: Uint8Array): Uint8Array {
  let i = 0;
  while (i < b.length && (b[i]! & 0xc0) === 0x80) i++;
  return b.subarray(i);
}

const concat = concatBytes;

/** Normalises paths, sorts by byte order and refuses duplicates, so callers cannot make two archives of one tree. */
export function sortTarEntries(entries: readonly TarEntry[], keepOrder = false): TarEntry[] {
  const norm = entries.map((e) => {
    const path = normalizeTreePath(e.path, 'tar entry');
    if (path === '') throw new InputError('tar entry with an empty path');
    return { ...e, path };
  });
  const sorted = [...norm].sort((a, b) => compareBytes(a.path, b.path));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.path === sorted[i - 1]!.path) throw new InputError(`tar entry ${JSON.stringify(sorted[i]!.path)} given twice`);
  }
  return keepOrder ? norm : sorted;
}

/** The archive as a stream of chunks; file contents are pulled only when their turn comes. */
export async function* writeTar(entries: readonly TarEntry[], opts: TarWriteOptions): AsyncGenerator<Uint8Array> {
  const mtime = Math.floor(opts.mtime);
  if (!(mtime >= 0)) throw new InputError(`tar mtime ${opts.mtime} must be a non-negative number of seconds`);
  for (const e of sortTarEntries(entries, opts.keepOrder)) {
    if (e.type === 'dir') {
      yield* headersFor(`${e.path}/`, '5', e.mode, 0, mtime);
    } else if (e.type === 'symlink') {
      yield* headersFor(e.path, '2', 0o777, 0, mtime, e.target);
    } else {
      const size = e.content.size;
      yield* headersFor(e.path, '0', e.mode, size, mtime);
      let seen = 0;
      for await (const chunk of e.content.stream()) {
        seen += chunk.length;
        if (seen > size) break;
        yield chunk;
      }
      if (seen !== size) {
        throw new OssifyError(`${e.content.origin}: expected ${size} bytes for tar entry ${e.path}, got ${seen > size ? 'more' : seen}`);
      }
      const pad = padding(size);
      if (pad) yield pad;
    }
  }
  yield ZERO_BLOCKS;
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface TarReadEntry {
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  size: number;
  linkname: string;
  /** The entry's bytes; must be consumed (or not at all) before asking for the next entry. */
  body: AsyncIterable<Uint8Array>;
}

/** Pulls exact byte counts out of a chunk stream without copying more than needed. */
class ByteQueue {
  private bufs: Uint8Array[] = [];
  private len = 0;
  offset = 0;
  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  private async fill(n: number): Promise<boolean> {
    while (this.len < n) {
      const r = await this.it.next();
      if (r.done) return false;
      if (r.value.length > 0) {
        this.bufs.push(r.value);
        this.len += r.value.length;
      }
    }
    return true;
  }

  /** Up to `max` bytes that are already buffered or arrive next; empty at end of input. */
  private async some(max: number): Promise<Uint8Array> {
    if (this.len === 0 && !(await this.fill(1))) return new Uint8Array(0);
    const head = this.bufs[0]!;
    if (head.length <= max) {
      this.bufs.shift();
      this.len -= head.length;
      this.offset += head.length;
      return head;
    }
    this.bufs[0] = head.subarray(max);
    this.len -= max;
    this.offset += max;
    return head.subarray(0, max);
  }

  async take(n: number): Promise<Uint8Array | undefined> {
    if (!(await this.fill(n))) {
      if (this.len === 0) return undefined;
      throw new InputError(`tar: truncated archive at byte ${this.offset + this.len}`);
    }
    const parts: Uint8Array[] = [];
    let need = n;
    while (need > 0) {
      const c = await this.some(need);
      parts.push(c);
      need -= c.length;
    }
    return parts.length === 1 ? parts[0]! : concat(parts);
  }

  async *stream(n: number): AsyncGenerator<Uint8Array> {
    let left = n;
    while (left > 0) {
      const c = await this.some(left);
      if (c.length === 0) throw new InputError(`tar: archive ends inside an entry at byte ${this.offset}`);
      left -= c.length;
      yield c;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.stream(n)) void _;
  }
}

function cstr(b: Uint8Array, off: number, len: number): Uint8Array {
  const f = b.subarray(off, off + len);
  const z = f.indexOf(0);
  return z < 0 ? f : f.subarray(0, z);
}

function parseNumber(b: Uint8Array, off: number, len: number, what: string): number {
  const f = b.subarray(off, off + len);
  if (f[0]! & 0x80) {
    let v = BigInt(f[0]! & 0x7f);
    for (let i = 1; i < f.length; i++) v = (v << 8n) | BigInt(f[i]!);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new InputError(`tar: ${what} too large`);
    return Number(v);
  }
  const s = dec.decode(cstr(b, off, len)).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new InputError(`tar: ${what} field ${JSON.stringify(s)} is not octal`);
  return parseInt(s, 8);
}

function checksumOk(b: Uint8Array): boolean {
  const stored = parseNumber(b, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const x = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += x;
    signed += x > 127 ? x - 256 : x;
  }
  return stored === unsigned || stored === signed;
}

function parsePax(body: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < body.length) {
    const sp = body.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(dec.decode(body.subarray(i, sp)), 10);
    if (!(len > 0) || i + len > body.length) throw new InputError('tar: malformed PAX record');
    const rec = dec.decode(body.subarray(sp + 1, i + len - 1));
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    i += len;
  }
  return out;
}

/** Streams the entries of a tar archive (ustar, PAX and GNU long names). */
export async function* readTar(source: AsyncIterable<Uint8Array>): AsyncGenerator<TarReadEntry> {
  const q = new ByteQueue(source[Symbol.asyncIterator]());
  let pax = new Map<string, string>();
  let gnuName: string | undefined;
  let gnuLink: string | undefined;
  for (;;) {
    const at = q.offset;
    const h = await q.take(BLOCK);
    if (!h) return; // EOF without end blocks: tolerated, as GNU tar does
    if (h.every((x) => x === 0)) return;
    if (!checksumOk(h)) throw new InputError(`tar: header checksum mismatch at byte ${at}`);
    const typeflag = h[156] === 0 ? '0' : String.fromCharCode(h[156]!);
    let size = parseNumber(h, 124, 12, 'size');
    const padded = size + ((BLOCK - (size % BLOCK)) % BLOCK);

    if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
      if (size > 1 << 20) throw new InputError(`tar: metadata entry of ${size} bytes at byte ${at}`);
      const body = (await q.take(padded)) ?? new Uint8Array(0);
      const data = body.subarray(0, size);
      if (typeflag === 'x') pax = parsePax(data);
      else if (typeflag === 'L') gnuName = dec.decode(cstr(data, 0, data.length));
      else if (typeflag === 'K') gnuLink = dec.decode(cstr(data, 0, data.length));
      continue;
    }

    const magic = dec.decode(h.subarray(257, 262));
    const prefix = magic === 'ustar' ? dec.decode(cstr(h, 345, 155)) : '';
    let path = dec.decode(cstr(h, 0, 100));
    if (prefix) path = `${prefix}/${path}`;
    path = pax.get('path') ?? gnuName ?? path;
    const linkname = pax.get('linkpath') ?? gnuLink ?? dec.decode(cstr(h, 157, 100));
    if (pax.has('size')) size = Number(pax.get('size'));
    const realPadded = size + ((BLOCK - (size % BLOCK)) % BLOCK);
    const type: TarReadEntry['type'] =
      typeflag === '0' || typeflag === '7' ? 'file' : typeflag === '5' ? 'dir' : typeflag === '2' ? 'symlink' : typeflag === '1' ? 'hardlink' : 'other';
    const entry: TarReadEntry = {
      path: path.replace(/\/+$/, ''),
      type,
      typeflag,
      mode: parseNumber(h, 100, 8, 'mode'),
      uid: pax.has('uid') ? Number(pax.get('uid')) : parseNumber(h, 108, 8, 'uid'),
      gid: pax.has('gid') ? Number(pax.get('gid')) : parseNumber(h, 116, 8, 'gid'),
      mtime: pax.has('mtime') ? Math.floor(Number(pax.get('mtime'))) : parseNumber(h, 136, 12, 'mtime'),
      size: type === 'file' ? size : 0,
      linkname,
      body: q.stream(type === 'file' ? size : 0),
    };
    pax = new Map();
    gnuName = undefined;
    gnuLink = undefined;
    const before = q.offset;
    yield entry;
    // Whatever of the entry the consumer did not read is skipped here.
    const consumed = q.offset - before;
    await q.skip(realPadded - consumed);
  }
}

// ---------------------------------------------------------------------------------------------
// GNU sparse files

/** Sparse map entries in an old-GNU header, and in each extension block after it. */
const SPARSE_IN_HEADER = 4;
const SPARSE_PER_EXTENSION = 21;

function writeNumber(buf: Uint8Array, off: number, len: number, n: number): void {
  if (n > MAX_OCTAL_SIZE) writeBase256(buf, off, len, n);
  else writeOctal(buf, off, len, n);
}

function writeSparseEntries(buf: Uint8Array, off: number, entries: readonly { offset: number; length: number }[]): void {
  entries.forEach((e, i) => {
    writeNumber(buf, off + i * 24, 12, e.offset);
    writeNumber(buf, off + i * 24 + 12, 12, e.length);
  });
}

/**
 * One sparse file as GNU tar writes it with `--format=oldgnu --sparse` (type `S`): the map of
 * data runs in the header (and extension blocks when it has more than four), then only the
 * runs' bytes. A map ending in a hole ends with an empty run at the file's size, as GNU tar's
 * does. The source is read twice: once for the map, which the header needs first, once for
 * the data, so nothing but the map is held in memory.
 */
export async function* writeSparseTar(entry: { path: string; mode: number; source: BlockSource }, opts: TarWriteOptions): AsyncGenerator<Uint8Array> {
  const { source } = entry;
  const mtime = Math.floor(opts.mtime);
  const name = enc.encode(normalizeTreePath(entry.path, 'tar entry'));
  if (name.length > 100) throw new InputError(`sparse tar entry ${entry.path}: name longer than 100 bytes`);
  const runs: { offset: number; length: number }[] = [];
  for await (const b of source.blocks()) mergeRuns(runs, { offset: b.offset, length: Math.min(b.data.length, source.size - b.offset) });
  const last = runs[runs.length - 1];
  if (!last || last.offset + last.length < source.size) runs.push({ offset: source.size, length: 0 });
  const stored = runs.reduce((n, r) => n + r.length, 0);

  const h = new Uint8Array(BLOCK);
  writeString(h, 0, 100, name);
  writeOctal(h, 100, 8, entry.mode & 0o7777);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  writeNumber(h, 124, 12, stored);
  writeOctal(h, 136, 12, mtime);
  h.fill(0x20, 148, 156);
  writeString(h, 156, 1, 'S');
  writeString(h, 257, 8, 'ustar  \0');
  writeSparseEntries(h, 386, runs.slice(0, SPARSE_IN_HEADER));
  h[482] = runs.length > SPARSE_IN_HEADER ? 1 : 0;
  writeNumber(h, 483, 12, source.size);
  let sum = 0;
  for (const x of h) sum += x;
  writeString(h, 148, 8, sum.toString(8).padStart(6, '0') + '\0 ');
  yield h;
  for (let i = SPARSE_IN_HEADER; i < runs.length; i += SPARSE_PER_EXTENSION) {
    const ext = new Uint8Array(BLOCK);
    writeSparseEntries(ext, 0, runs.slice(i, i + SPARSE_PER_EXTENSION));
    ext[504] = i + SPARSE_PER_EXTENSION < runs.length ? 1 : 0;
    yield ext;
  }
  let seen = 0;
  for await (const b of source.blocks()) {
    const data = b.data.subarray(0, Math.min(b.data.length, source.size - b.offset));
    seen += data.length;
    yield data;
  }
  if (seen !== stored) throw new OssifyError(`sparse tar entry ${entry.path}: its source changed while it was read (${seen} bytes of data, the map says ${stored})`);
  const p = padding(stored);
  if (p) yield p;
  yield ZERO_BLOCKS;
}
