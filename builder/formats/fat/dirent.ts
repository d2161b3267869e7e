/** 32-byte FAT directory entries and FAT's packed local-time timestamps. */

export const DIRENT_SIZE = 32;
export const ATTR_READ_ONLY = 0x01;
export const ATTR_HIDDEN = 0x02;
export const ATTR_SYSTEM = 0x04;
export const ATTR_VOLUME_ID = 0x08;
export const ATTR_DIRECTORY = 0x10;
export const ATTR_ARCHIVE = 0x20;
export const ATTR_LFN = 0x0f;

export interface FatTime {
  date: number;
  time: number;
  /** Creation-time refinement in 10 ms units (0–199): carries the odd second. */
  tenths: number;
}

const MIN_EPOCH = Date.UTC(1980, 0, 1) / 1000;
const MAX_EPOCH = Date.UTC(2107, 11, 31, 23, 59, 59) / 1000;

/**
 * FAT stores local time with no zone. Epoch seconds are rendered as UTC, so the same tree
 * gives the same bytes in every time zone (and firmware, which has no zone, agrees with
 * `TZ=UTC` readers). Times outside 1980–2107 clamp to the nearest representable one.
 */
export function fatTime(epochSeconds: number): FatTime {
  const s = Math.min(Math.max(Math.floor(epochSeconds), MIN_EPOCH), MAX_EPOCH);
  const d = new Date(s * 1000);
  return {
    date: ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate(),
    time: (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1),
    tenths: (d.getUTCSeconds() & 1) * 100,
  };
}

/** Inverse of `fatTime` (to 2 s, or 10 ms with `tenths`), as epoch seconds. */
export function epochFromFat(date: number, time: number, tenths = 0): number {
  const ms = Date.UTC(
    1980 + (date >> 9),
    ((date >> 5) & 0xf) - 1,
    date & 0x1f,
    time >> 11,
    (time >> 5) & 0x3f,
    (time & 0x1f) * 2,
  );
  return ms / 1000 + Math.floor(tenths / 100);
}

export interface ShortEntry {
  /** 11 raw name bytes as a latin1 string. */
  raw: string;
  attr: number;
  caseFlags: number;
  cluster: number;
  size: number;
  mtime: number;
}

/** A short (8.3) entry; created, written and accessed times all come from `mtime`. */
export function encodeShortEntry(e: ShortEntry): Uint8Array {
  const b = new Uint8Array(DIRENT_SIZE);
  const dv = new DataView(b.buffer);
  for (let i = 0; i < 11; i++) b[i] = e.raw.charCodeAt(i);
  b[11] = e.attr;
  b[12] = e.caseFlags;
  const t = fatTime(e.mtime);
  b[13] = t.tenths;
  dv.setUint16(14, t.time, true);
  dv.setUint16(16, t.date, true);
  dv.setUint16(18, t.date, true);
  dv.setUint16(20, e.cluster >>> 16, true);
  dv.setUint16(22, t.time, true);
  dv.setUint16(24, t.date, true);
  dv.setUint16(26, e.cluster & 0xffff, true);
  dv.setUint32(28, e.size, true);
  return b;
}
