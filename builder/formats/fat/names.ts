import { InputError } from '../../util/errors.ts';

/**
 * FAT names: every file has an 8.3 short entry; names that 8.3 cannot hold exactly get a
 * chain of long-name (VFAT LFN) entries in front of it. Short names are generated the way
 * Windows does (`LONGNA~1.TXT`), in a fixed order, so the same directory always gets the
 * same short names.
 */

/** Case flags in the short entry's NTRes byte (Windows NT, honoured by Linux, mtools, EDK2). */
export const LOWER_BASE = 0x08;
export const LOWER_EXT = 0x10;

export const MAX_LONG_NAME = 255;
const LFN_CHARS_PER_ENTRY = 13;

/** Characters legal in a short name besides A–Z and 0–9 (fatgen103 §6.1). */
const SHORT_SPECIAL = new Set("$%'-_@~`!(){}^#&");
const FORBIDDEN = new Set('"*/:<>?\\|');

const isShortChar = (c: string) => /^[A-Z0-9]$/.test(c) || SHORT_SPECIAL.has(c);

/** Uppercases ASCII only: the short-name character set is ASCII here, and non-ASCII case rules vary by codepage. */
const upperAscii = (s: string) => s.replace(/[a-z]/g, (c) => c.toUpperCase());

/** The key two names collide on: FAT lookups ignore case. */
export function caseFoldKey(name: string): string {
  // toUpperCase per code point, but never changing length (ß stays ß), like Windows' upcase table.
  return [...name].map((c) => {
    const u = c.toUpperCase();
    return u.length === c.length ? u : c;
  }).join('');
}

export function checkLongName(name: string, path: string): void {
  const why = longNameProblem(name);
  if (why) throw new InputError(`FAT: cannot store ${JSON.stringify(path)}: ${why}`);
}

function longNameProblem(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return 'reserved name';
  if (name.length > MAX_LONG_NAME) return `name is ${name.length} UTF-16 units, FAT allows ${MAX_LONG_NAME}`;
  for (const c of name) {
    if (c.charCodeAt(0) < 0x20) return 'name contains a control character';
    if (FORBIDDEN.has(c)) return `name contains ${JSON.stringify(c)}, which FAT forbids`;
  }
  // Windows and firmware drivers strip these on lookup, so the name could never be found again.
  if (/[. ]$/.test(name)) return 'name ends in a dot or space';
  return undefined;
}

export interface ShortName {
  /** 11 bytes: base padded to 8, extension padded to 3, uppercase. */
  raw: string;
  caseFlags: number;
  /** Whether LFN entries must precede the short entry. */
  needsLfn: boolean;
}

/**
 * A name 8.3 holds exactly: 1–8 base chars, optional 1–3 extension chars, legal short
 * characters once uppercased, and each part all one case (the NTRes flags record a
 * lowercase part; a mixed-case part needs a long name to keep its case).
 */
function exact83(name: string): { base: string; ext: string; caseFlags: number; mixed: boolean } | undefined {
  const m = /^([^.]{1,8})(?:\.([^.]{1,3}))?$/.exec(name);
  if (!m) return undefined;
  const base = m[1]!;
  const ext = m[2] ?? '';
  if (![...upperAscii(base + ext)].every(isShortChar)) return undefined;
  const lower = (s: string) => /[a-z]/.test(s) && !/[A-Z]/.test(s);
  const mixedPart = (s: string) => /[a-z]/.test(s) && /[A-Z]/.test(s);
  return {
    base: upperAscii(base),
    ext: upperAscii(ext),
    caseFlags: (lower(base) ? LOWER_BASE : 0) | (lower(ext) ? LOWER_EXT : 0),
    mixed: mixedPart(base) || mixedPart(ext),
  };
}

const pack = (base: string, ext: string) => base.padEnd(8, ' ') + ext.padEnd(3, ' ');

/** The "basis name" of Windows' algorithm: what is left of the name in short characters. */
function basis(name: string): { base: string; ext: string } {
  const clean = (s: string) =>
    [...upperAscii(s)]
      .filter((c) => c !== ' ' && c !== '.')
      // `+,;=[]` and anything non-ASCII: legal in long names only.
      .map((c) => (isShortChar(c) ? c : '_'))
      .join('');
  const stripped = name.replace(/^[. ]+/, '');
  const dot = stripped.lastIndexOf('.');
  const base = clean(dot < 0 ? stripped : stripped.slice(0, dot));
  const ext = dot < 0 ? '' : clean(stripped.slice(dot + 1)).slice(0, 3);
  return { base: base === '' ? '_' : base, ext };
}

/**
 * Assigns short names for one directory's children (in the given order). Names that fit
 * 8.3 exactly claim their short name first, so a generated `~N` never steals one.
 */
export function assignShortNames(names: string[], dirPath: string): ShortName[] {
  const out = new Array<ShortName | undefined>(names.length);
  const taken = new Set<string>();
  const seen = new Map<string, string>();
  names.forEach((n) => {
    const k = caseFoldKey(n);
    const other = seen.get(k);
    if (other !== undefined) {
      throw new InputError(`FAT: ${JSON.stringify(other)} and ${JSON.stringify(n)} in ${JSON.stringify(dirPath || '/')} differ only in case; FAT cannot hold both`);
    }
    seen.set(k, n);
  });
  names.forEach((n, i) => {
    const e = exact83(n);
    if (!e) return;
    const raw = pack(e.base, e.ext);
    if (taken.has(raw)) return;
    taken.add(raw);
    out[i] = { raw, caseFlags: e.mixed ? 0 : e.caseFlags, needsLfn: e.mixed };
  });
  // Where each basis' ~N search resumes: keeps a directory of many similar names linear.
  const nextTail = new Map<string, number>();
  names.forEach((n, i) => {
    if (out[i]) return;
    const { base, ext } = basis(n);
    // Names sharing the first six basis characters compete for the same ~N names; the
    // `taken` check keeps it correct whatever the start.
    const key = `${base.slice(0, 6)}.${ext}`;
    for (let k = nextTail.get(key) ?? 1; k <= 999_999; k++) {
      const tail = `~${k}`;
      const raw = pack(base.slice(0, 8 - tail.length) + tail, ext);
      if (!taken.has(raw)) {
        taken.add(raw);
        nextTail.set(key, k + 1);
        out[i] = { raw, caseFlags: 0, needsLfn: true };
        return;
      }
    }
    throw new InputError(`FAT: no free short name for ${JSON.stringify(n)} in ${JSON.stringify(dirPath || '/')}`);
  });
  return out as ShortName[];
}

/** The checksum every LFN entry carries of its short entry's 11 name bytes. */
export function lfnChecksum(raw: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = ((((sum & 1) << 7) | (sum >> 1)) + raw[i]!) & 0xff;
  return sum;
}

export function lfnEntryCount(name: string): number {
  return Math.ceil(name.length / LFN_CHARS_PER_ENTRY);
}

/** Offsets of the 13 UTF-16 characters inside an LFN entry. */
const LFN_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/** LFN entries in on-disk order: highest sequence number (flagged 0x40) first. */
export function encodeLfnEntries(name: string, checksum: number): Uint8Array[] {
  const n = lfnEntryCount(name);
  const out: Uint8Array[] = [];
  for (let seq = n; seq >= 1; seq--) {
    const e = new Uint8Array(32);
    const dv = new DataView(e.buffer);
    e[0] = seq | (seq === n ? 0x40 : 0);
    e[11] = 0x0f;
    e[13] = checksum;
    LFN_OFFSETS.forEach((off, j) => {
      const idx = (seq - 1) * LFN_CHARS_PER_ENTRY + j;
      // After the name: one NUL terminator (unless it ends exactly), then 0xFFFF padding.
      const unit = idx < name.length ? name.charCodeAt(idx) : idx === name.length ? 0x0000 : 0xffff;
      dv.setUint16(off, unit, true);
    });
    out.push(e);
  }
  return out;
}

/** Reads the characters of one LFN entry (up to the terminator). */
export function decodeLfnChars(e: Uint8Array): { chars: string; terminated: boolean } {
  const dv = new DataView(e.buffer, e.byteOffset, 32);
  let chars = '';
  for (const off of LFN_OFFSETS) {
    const u = dv.getUint16(off, true);
    if (u === 0x0000) return { chars, terminated: true };
    chars += String.fromCharCode(u);
  }
  return { chars, terminated: false };
}

/** The volume label as stored (BPB and root entry): short-name characters plus space, uppercased. */
export function encodeLabel(label: string): string {
  if (label === '') return 'NO NAME    ';
  const up = upperAscii(label);
  if (up.length > 11 || ![...up].every((c) => c === ' ' || isShortChar(c))) {
    throw new InputError(`FAT: volume label ${JSON.stringify(label)} must be at most 11 of A–Z, 0–9, space and ${[...SHORT_SPECIAL].join('')}`);
  }
  return up.padEnd(11, ' ');
}
