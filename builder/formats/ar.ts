import { OssifyError } from '../util/errors.ts';

/**
 * Unix `ar` archives, read-only: the container of a `.deb` (debian-binary, control.tar.*,
 * data.tar.*). Members are returned as views into the input, never copied, because a
 * kernel package's data member is tens of megabytes.
 *
 * Layout: the global header `!<arch>\n`, then per member a 60-byte ASCII header (name 16,
 * mtime 12, uid 6, gid 6, mode 8 octal, size 10, terminator "`\n") and the data, padded
 * with `\n` to an even offset.
 */

export interface ArMember {
  name: string;
  mtime: number;
  uid: number;
  gid: number;
  mode: number;
  data: Uint8Array;
}

const GLOBAL_HEADER = '!<arch>\n';
const HEADER_SIZE = 60;

export class ArFormatError extends OssifyError {
  constructor(origin: string, message: string) {
    super(`${origin}: not a valid ar archive: ${message}`, { exitCode: 2 });
    this.name = 'ArFormatError';
  }
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

function field(bytes: Uint8Array, start: number, len: number): string {
  return latin1.decode(bytes.subarray(start, start + len)).trimEnd();
}

function num(text: string, radix: number, what: string, origin: string, at: number): number {
  if (text === '') return 0;
  const re = radix === 8 ? /^[0-7]+$/ : /^\d+$/;
  if (!re.test(text)) throw new ArFormatError(origin, `bad ${what} ${JSON.stringify(text)} in member header at offset ${at}`);
  return parseInt(text, radix);
}

export function isAr(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && latin1.decode(bytes.subarray(0, 8)) === GLOBAL_HEADER;
}

export function readAr(bytes: Uint8Array, origin = '<ar>'): ArMember[] {
  if (!isAr(bytes)) throw new ArFormatError(origin, 'missing !<arch> header');
  const out: ArMember[] = [];
  // GNU ar keeps names longer than 15 bytes in a `//` member and refers to them as `/<offset>`.
  let longNames: Uint8Array | undefined;
  let off = GLOBAL_HEADER.length;
  while (off < bytes.length) {
    // A trailing pad byte after the last member is legal; anything shorter than a header is not.
    if (bytes.length - off === 1 && bytes[off] === 0x0a) break;
    if (off + HEADER_SIZE > bytes.length) throw new ArFormatError(origin, `truncated member header at offset ${off}`);
    if (bytes[off + 58] !== 0x60 || bytes[off + 59] !== 0x0a) {
      throw new ArFormatError(origin, `bad member header terminator at offset ${off}`);
    }
    let name = field(bytes, off, 16);
    const mtime = num(field(bytes, off + 16, 12), 10, 'mtime', origin, off);
    const uid = num(field(bytes, off + 28, 6), 10, 'uid', origin, off);
    const gid = num(field(bytes, off + 34, 6), 10, 'gid', origin, off);
    const mode = num(field(bytes, off + 40, 8), 8, 'mode', origin, off);
    const size = num(field(bytes, off + 48, 10), 10, 'size', origin, off);
    let start = off + HEADER_SIZE;
    let end = start + size;
    if (end > bytes.length) throw new ArFormatError(origin, `member ${JSON.stringify(name)} runs past the end of the archive`);
    off = end + (size % 2);

    if (name === '//') {
      longNames = bytes.subarray(start, end);
      continue;
    }
    if (name === '/' || name === '/SYM64/') continue; // symbol tables: irrelevant to packages
    if (name.startsWith('#1/')) {
      // BSD: the name is stored at the start of the data.
      const n = num(name.slice(3), 10, 'BSD name length', origin, off);
      if (n > size) throw new ArFormatError(origin, `BSD name longer than its member at offset ${off}`);
      name = utf8.decode(bytes.subarray(start, start + n)).replace(/\0+$/, '');
      start += n;
    } else if (/^\/\d+$/.test(name)) {
      if (!longNames) throw new ArFormatError(origin, `long name reference ${name} without a // table`);
      const at = Number(name.slice(1));
      let stop = longNames.indexOf(0x0a, at);
      if (stop < 0) stop = longNames.length;
      name = utf8.decode(longNames.subarray(at, stop)).replace(/\/$/, '');
    } else if (name.endsWith('/')) {
      name = name.slice(0, -1); // GNU terminates short names with '/'
    }
    end = Math.max(start, end);
    out.push({ name, mtime, uid, gid, mode, data: bytes.subarray(start, end) });
  }
  return out;
}
