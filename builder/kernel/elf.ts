/**
 * Just enough ELF to read a kernel module's `.modinfo` section: the NUL-separated
 * `key=value` strings modpost writes (`depends=`, `vermagic=`, `name=`, `alias=`, …).
 * Reading them here means no host `modinfo` and no `modules.dep`, which Debian's
 * kernel package does not ship.
 */

export class ElfError extends Error {
  override name = 'ElfError';
}

interface Section {
  name: string;
  offset: number;
  size: number;
}

function sections(bytes: Uint8Array): Section[] {
  if (bytes.length < 64 || bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) {
    throw new ElfError('not an ELF file');
  }
  if (bytes[4] !== 2) throw new ElfError('not a 64-bit ELF file');
  const le = bytes[5] === 1;
  if (!le && bytes[5] !== 2) throw new ElfError('unknown ELF byte order');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u16 = (o: number) => dv.getUint16(o, le);
  const u32 = (o: number) => dv.getUint32(o, le);
  const u64 = (o: number) => {
    const v = dv.getBigUint64(o, le);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ElfError('ELF offset out of range');
    return Number(v);
  };
  const shoff = u64(0x28);
  const shentsize = u16(0x3a);
  let shnum = u16(0x3c);
  let shstrndx = u16(0x3e);
  if (shoff === 0) throw new ElfError('ELF file has no section headers');
  if (shentsize < 64) throw new ElfError(`bad section header size ${shentsize}`);
  const at = (i: number) => {
    const o = shoff + i * shentsize;
    if (o + 64 > bytes.length) throw new ElfError(`section header ${i} past the end of the file`);
    return o;
  };
  // More than 0xff00 sections: the real counts live in section header 0.
  if (shnum === 0) shnum = u64(at(0) + 32);
  if (shstrndx === 0xffff) shstrndx = u32(at(0) + 40);
  const raw = [];
  for (let i = 0; i < shnum; i++) {
    const o = at(i);
    const type = u32(o + 4);
    // SHT_NOBITS (.bss) occupies no bytes in the file.
    raw.push({ nameOff: u32(o), offset: u64(o + 24), size: type === 8 ? 0 : u64(o + 32) });
  }
  const strtab = raw[shstrndx];
  if (!strtab) throw new ElfError('bad section name table index');
  const text = new TextDecoder('latin1');
  return raw.map((s) => {
    if (s.offset + s.size > bytes.length) throw new ElfError('section past the end of the file');
    const start = strtab.offset + s.nameOff;
    let end = start;
    while (end < strtab.offset + strtab.size && bytes[end] !== 0) end++;
    return { name: text.decode(bytes.subarray(start, end)), offset: s.offset, size: s.size };
  });
}

/** Every `.modinfo` key with its values in file order (keys such as `alias` repeat). */
export function readModinfo(bytes: Uint8Array): Map<string, string[]> {
  const sec = sections(bytes).find((s) => s.name === '.modinfo');
  if (!sec) throw new ElfError('no .modinfo section (not a kernel module?)');
  const out = new Map<string, string[]>();
  const text = new TextDecoder('utf-8').decode(bytes.subarray(sec.offset, sec.offset + sec.size));
  for (const item of text.split('\0')) {
    const i = item.indexOf('=');
    if (i <= 0) continue;
    const key = item.slice(0, i);
    const list = out.get(key) ?? [];
    list.push(item.slice(i + 1));
    out.set(key, list);
  }
  return out;
}
