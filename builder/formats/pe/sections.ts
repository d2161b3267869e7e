import { updatePeChecksum } from './checksum.ts';
import {
  COFF_SYMBOL_SIZE,
  DIR_SECURITY,
  FILE_LOCAL_SYMS_STRIPPED,
  parsePe,
  PeFormatError,
  SCN_CNT_CODE,
  SCN_CNT_INITIALIZED_DATA,
  SECTION_HEADER_SIZE,
  type PeHeaders,
} from './headers.ts';

export interface NewSection {
  /** At most 8 bytes: longer names would need a COFF string table, which images must not have. */
  name: string;
  data: Uint8Array;
  /** SCN_* flags. */
  characteristics: number;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * Linkers (and systemd's stubs before v253) may leave the COFF symbol and string tables at
 * the end of an image. Nothing at run time reads them, and new section data must not land
 * behind a table that claims to end the file, so they are dropped when they do end it.
 */
function stripTrailingSymbols(bytes: Uint8Array, h: PeHeaders): Uint8Array {
  if (h.pointerToSymbolTable === 0) return bytes;
  const strings = h.pointerToSymbolTable + h.numberOfSymbols * COFF_SYMBOL_SIZE;
  if (strings + 4 > bytes.length) return bytes;
  const stringsSize = new DataView(bytes.buffer, bytes.byteOffset).getUint32(strings, true);
  if (strings + stringsSize !== bytes.length) return bytes;
  // A copy, never a view: Buffer#slice shares memory, and the caller's stub must stay intact.
  const out = new Uint8Array(h.pointerToSymbolTable);
  out.set(bytes.subarray(0, h.pointerToSymbolTable));
  const dv = new DataView(out.buffer);
  dv.setUint32(h.offsets.coffHeader + 8, 0, true);
  dv.setUint32(h.offsets.coffHeader + 12, 0, true);
  dv.setUint16(h.offsets.coffHeader + 18, h.characteristics | FILE_LOCAL_SYMS_STRIPPED, true);
  return out;
}

/**
 * Appends sections to a PE image, the way a linker would have placed them: each new section's
 * VirtualAddress follows the previous section's end rounded up to SectionAlignment, its raw
 * data starts at the end of the file rounded up to FileAlignment and is zero-padded to it.
 * SizeOfImage, SizeOfCode/SizeOfInitializedData and CheckSum are updated; TimeDateStamp and
 * everything else is kept, so the output is a pure function of the inputs.
 *
 * Refuses a signed image (appending would invalidate the signature: sign the result instead)
 * and an image whose headers have no room for the new section headers.
 */
export function addPeSections(image: Uint8Array, add: NewSection[]): Uint8Array {
  let h = parsePe(image);
  const sec = h.dataDirectories[DIR_SECURITY];
  if (sec && (sec.virtualAddress !== 0 || sec.size !== 0)) {
    throw new PeFormatError('the image is already signed (it has a certificate table); add sections to the unsigned image, then sign');
  }
  const stripped = stripTrailingSymbols(image, h);
  if (stripped !== image) h = parsePe(stripped);

  for (const s of add) {
    if (Buffer.byteLength(s.name, 'latin1') > 8 || s.name.length === 0 || /[^\x20-\x7e]/.test(s.name)) {
      throw new PeFormatError(`section name ${JSON.stringify(s.name)} must be 1–8 printable ASCII characters`);
    }
    if (s.data.length === 0) throw new PeFormatError(`section ${s.name} is empty: leave it out instead`);
    if (h.sections.some((e) => e.name === s.name) || add.filter((o) => o.name === s.name).length > 1) {
      throw new PeFormatError(`section ${s.name} would appear twice (loaders take the first, which hides the other)`);
    }
  }

  // New headers go right after the existing table; they must fit before the first section's
  // raw data and inside SizeOfHeaders (rounded to FileAlignment, as the loader maps it).
  const firstRaw = Math.min(...h.sections.filter((s) => s.sizeOfRawData > 0).map((s) => s.pointerToRawData), Infinity);
  const headerLimit = Math.min(roundUp(h.sizeOfHeaders, h.fileAlignment), firstRaw);
  const tableEnd = h.offsets.sectionTableEnd + add.length * SECTION_HEADER_SIZE;
  if (tableEnd > headerLimit) {
    const room = Math.max(0, Math.floor((headerLimit - h.offsets.sectionTableEnd) / SECTION_HEADER_SIZE));
    throw new PeFormatError(
      `not enough header space for ${add.length} more section headers: the section table ends at ${h.offsets.sectionTableEnd}, ` +
        `headers end at ${headerLimit}, room for ${room}; link the stub with a larger SizeOfHeaders`,
    );
  }
  if (stripped.subarray(h.offsets.sectionTableEnd, tableEnd).some((b) => b !== 0)) {
    throw new PeFormatError(`the bytes after the section table (${h.offsets.sectionTableEnd}–${tableEnd}) are in use; refusing to overwrite them`);
  }

  // A VirtualSize of 0 is an old linker convention for "same as SizeOfRawData".
  const mappedEnd = Math.max(h.sizeOfHeaders, ...h.sections.map((s) => s.virtualAddress + (s.virtualSize || s.sizeOfRawData)));
  let nextVa = roundUp(mappedEnd, h.sectionAlignment);
  let fileEnd = roundUp(stripped.length, h.fileAlignment);
  const placed = add.map((s) => {
    const p = { ...s, virtualAddress: nextVa, pointerToRawData: fileEnd, sizeOfRawData: roundUp(s.data.length, h.fileAlignment) };
    nextVa = roundUp(nextVa + s.data.length, h.sectionAlignment);
    fileEnd += p.sizeOfRawData;
    return p;
  });

  const out = new Uint8Array(fileEnd);
  out.set(stripped);
  const dv = new DataView(out.buffer);
  let sizeOfCode = h.sizeOfCode;
  let sizeOfInitializedData = h.sizeOfInitializedData;
  placed.forEach((p, i) => {
    const at = h.offsets.sectionTableEnd + i * SECTION_HEADER_SIZE;
    out.set(Buffer.from(p.name, 'latin1'), at);
    dv.setUint32(at + 8, p.data.length, true);
    dv.setUint32(at + 12, p.virtualAddress, true);
    dv.setUint32(at + 16, p.sizeOfRawData, true);
    dv.setUint32(at + 20, p.pointerToRawData, true);
    dv.setUint32(at + 36, p.characteristics, true);
    out.set(p.data, p.pointerToRawData);
    if (p.characteristics & SCN_CNT_CODE) sizeOfCode += p.sizeOfRawData;
    else if (p.characteristics & SCN_CNT_INITIALIZED_DATA) sizeOfInitializedData += p.sizeOfRawData;
  });
  const u32 = (n: number, what: string) => {
    if (n > 0xffff_ffff) throw new PeFormatError(`${what} ${n} does not fit in 32 bits: the image is too large for PE`);
    return n;
  };
  dv.setUint16(h.offsets.coffHeader + 2, h.numberOfSections + add.length, true);
  dv.setUint32(h.offsets.optionalHeader + 4, u32(sizeOfCode, 'SizeOfCode'), true);
  dv.setUint32(h.offsets.optionalHeader + 8, u32(sizeOfInitializedData, 'SizeOfInitializedData'), true);
  dv.setUint32(h.offsets.optionalHeader + 56, u32(nextVa, 'SizeOfImage'), true);
  if (h.sizeOfHeaders < tableEnd) dv.setUint32(h.offsets.optionalHeader + 60, roundUp(tableEnd, h.fileAlignment), true);
  updatePeChecksum(out, h.offsets.checkSum);
  return out;
}
