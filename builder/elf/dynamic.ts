/**
 * What the dynamic loader reads from an ELF file before running it: the program
 * interpreter (PT_INTERP) and the dynamic section (PT_DYNAMIC) with its DT_NEEDED,
 * DT_RPATH and DT_RUNPATH strings. Program headers, not sections: that is what ld.so
 * uses, and stripped binaries may have no section headers at all. Both classes and byte
 * orders are read, so a library of the wrong kind can be told apart and skipped.
 */

export class ElfFormatError extends Error {
  override name = 'ElfFormatError';
}

export interface DynamicInfo {
  class: 32 | 64;
  littleEndian: boolean;
  /** e_machine: 62 x86-64, 183 aarch64, 3 i386, … */
  machine: number;
  /** e_type: 2 executable, 3 shared object (or PIE). */
  type: number;
  /** PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2; absent for static binaries and most libraries. */
  interpreter?: string;
  needed: string[];
  rpath: string[];
  runpath: string[];
  soname?: string;
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_SONAME = 14;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

export function isElf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46;
}

interface Segment {
  type: number;
  offset: number;
  vaddr: number;
  filesz: number;
}

export function readDynamic(bytes: Uint8Array): DynamicInfo {
  if (!isElf(bytes)) throw new ElfFormatError('not an ELF file');
  const cls = bytes[4];
  if (cls !== 1 && cls !== 2) throw new ElfFormatError(`unknown ELF class ${cls}`);
  const is64 = cls === 2;
  const le = bytes[5] === 1;
  if (!le && bytes[5] !== 2) throw new ElfFormatError('unknown ELF byte order');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (o: number, n: number) => {
    if (o < 0 || o + n > bytes.length) throw new ElfFormatError(`truncated ELF file (needs bytes ${o}..${o + n})`);
  };
  const u16 = (o: number) => (need(o, 2), dv.getUint16(o, le));
  const u32 = (o: number) => (need(o, 4), dv.getUint32(o, le));
  const addr = (o: number) => {
    if (!is64) return u32(o);
    need(o, 8);
    const v = dv.getBigUint64(o, le);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfFormatError('ELF value out of range');
    return Number(v);
  };
  const type = u16(16);
  const machine = u16(18);
  const phoff = addr(is64 ? 0x20 : 0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  if (phnum > 0 && phentsize < (is64 ? 56 : 32)) throw new ElfFormatError(`bad program header size ${phentsize}`);

  const segs: Segment[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    segs.push(
      is64
        ? { type: u32(o), offset: addr(o + 8), vaddr: addr(o + 16), filesz: addr(o + 32) }
        : { type: u32(o), offset: u32(o + 4), vaddr: u32(o + 8), filesz: u32(o + 16) },
    );
  }
  const cstr = (start: number, limit: number) => {
    let end = start;
    while (end < limit && end < bytes.length && bytes[end] !== 0) end++;
    if (end >= bytes.length) throw new ElfFormatError('unterminated string');
    return Buffer.from(bytes.subarray(start, end)).toString('utf8');
  };
  const info: DynamicInfo = { class: is64 ? 64 : 32, littleEndian: le, machine, type, needed: [], rpath: [], runpath: [] };

  const interp = segs.find((s) => s.type === PT_INTERP);
  if (interp) {
    need(interp.offset, interp.filesz);
    info.interpreter = cstr(interp.offset, interp.offset + interp.filesz);
  }
  const dyn = segs.find((s) => s.type === PT_DYNAMIC);
  if (!dyn) return info;

  // DT_STRTAB holds a virtual address; the PT_LOAD segment that maps it gives the file offset.
  const toOffset = (vaddr: number) => {
    const load = segs.find((s) => s.type === PT_LOAD && vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz);
    if (!load) throw new ElfFormatError(`address 0x${vaddr.toString(16)} is not in any loaded segment`);
    return vaddr - load.vaddr + load.offset;
  };
  const entries: [number, number][] = [];
  const entsize = is64 ? 16 : 8;
  need(dyn.offset, dyn.filesz);
  for (let o = dyn.offset; o + entsize <= dyn.offset + dyn.filesz; o += entsize) {
    const tag = is64 ? addr(o) : u32(o);
    if (tag === DT_NULL) break;
    entries.push([tag, is64 ? addr(o + 8) : u32(o + 4)]);
  }
  const strtab = entries.find(([t]) => t === DT_STRTAB)?.[1];
  const strsz = entries.find(([t]) => t === DT_STRSZ)?.[1] ?? Number.MAX_SAFE_INTEGER;
  if (strtab === undefined) return info;
  const base = toOffset(strtab);
  const str = (off: number) => cstr(base + off, base + strsz);
  for (const [tag, val] of entries) {
    if (tag === DT_NEEDED) info.needed.push(str(val));
    else if (tag === DT_RPATH) info.rpath.push(...str(val).split(':').filter(Boolean));
    else if (tag === DT_RUNPATH) info.runpath.push(...str(val).split(':').filter(Boolean));
    else if (tag === DT_SONAME) info.soname = str(val);
  }
  return info;
}
