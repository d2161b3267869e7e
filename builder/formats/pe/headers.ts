import { InputError } from '../../util/errors.ts';

/**
 * PE/COFF headers as the Microsoft PE format specification lays them out: DOS stub with
 * `e_lfanew`, "PE\0\0", COFF file header, optional header (PE32 or PE32+), section table.
 * Only what building and signing EFI images needs; all offsets are file offsets so writers
 * can patch fields in place.
 */

export const PE32_MAGIC = 0x10b;
export const PE32PLUS_MAGIC = 0x20b;
export const SECTION_HEADER_SIZE = 40;
export const COFF_SYMBOL_SIZE = 18;

/** Data directory indices used here. */
export const DIR_BASE_RELOC = 5;
export const DIR_SECURITY = 4;

/** Section characteristics. */
export const SCN_CNT_CODE = 0x0000_0020;
export const SCN_CNT_INITIALIZED_DATA = 0x0000_0040;
export const SCN_MEM_EXECUTE = 0x2000_0000;
export const SCN_MEM_READ = 0x4000_0000;
export const SCN_MEM_WRITE = 0x8000_0000;

/** COFF characteristics. */
export const FILE_LOCAL_SYMS_STRIPPED = 0x0008;

export interface PeSection {
  /** Up to 8 bytes, NULs stripped. */
  name: string;
  virtualSize: number;
  virtualAddress: number;
  sizeOfRawData: number;
  pointerToRawData: number;
  characteristics: number;
  /** File offset of this section's 40-byte header. */
  headerOffset: number;
}

export interface DataDirectory {
  virtualAddress: number;
  size: number;
}

export interface PeHeaders {
  /** e_lfanew: file offset of "PE\0\0". */
  peOffset: number;
  machine: number;
  numberOfSections: number;
  timeDateStamp: number;
  pointerToSymbolTable: number;
  numberOfSymbols: number;
  sizeOfOptionalHeader: number;
  characteristics: number;
  magic: typeof PE32_MAGIC | typeof PE32PLUS_MAGIC;
  sizeOfCode: number;
  sizeOfInitializedData: number;
  sizeOfUninitializedData: number;
  addressOfEntryPoint: number;
  imageBase: bigint;
  sectionAlignment: number;
  fileAlignment: number;
  sizeOfImage: number;
  sizeOfHeaders: number;
  checkSum: number;
  subsystem: number;
  dllCharacteristics: number;
  dataDirectories: DataDirectory[];
  sections: PeSection[];
  /** File offsets of fields writers and signers patch. */
  offsets: {
    coffHeader: number;
    optionalHeader: number;
    checkSum: number;
    /** Start of the data directory array. */
    dataDirectories: number;
    sectionTable: number;
    /** First byte after the last section header. */
    sectionTableEnd: number;
  };
}

/** Offsets inside the optional header that differ between PE32 and PE32+. */
const LAYOUT = {
  [PE32_MAGIC]: { imageBase: 28, numberOfRvaAndSizes: 92, dataDirectories: 96 },
  [PE32PLUS_MAGIC]: { imageBase: 24, numberOfRvaAndSizes: 108, dataDirectories: 112 },
} as const;

export class PeFormatError extends InputError {
  constructor(message: string) {
    super(`PE: ${message}`);
    this.name = 'PeFormatError';
  }
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function parsePe(bytes: Uint8Array): PeHeaders {
  const dv = view(bytes);
  const need = (end: number, what: string) => {
    if (end > bytes.length) throw new PeFormatError(`file is ${bytes.length} bytes, too short for ${what} (needs ${end})`);
  };
  need(64, 'the DOS header');
  if (bytes[0] !== 0x4d || bytes[1] !== 0x5a) throw new PeFormatError('no "MZ" DOS signature');
  const peOffset = dv.getUint32(0x3c, true);
  need(peOffset + 24, 'the COFF header');
  if (dv.getUint32(peOffset, true) !== 0x0000_4550) throw new PeFormatError(`no "PE\\0\\0" signature at e_lfanew ${peOffset}`);
  const coff = peOffset + 4;
  const numberOfSections = dv.getUint16(coff + 2, true);
  const sizeOfOptionalHeader = dv.getUint16(coff + 16, true);
  const opt = coff + 20;
  need(opt + sizeOfOptionalHeader, 'the optional header');
  const magic = dv.getUint16(opt, true);
  if (magic !== PE32_MAGIC && magic !== PE32PLUS_MAGIC) throw new PeFormatError(`optional header magic 0x${magic.toString(16)} is neither PE32 nor PE32+`);
  const lay = LAYOUT[magic];
  if (sizeOfOptionalHeader < lay.dataDirectories) throw new PeFormatError(`optional header of ${sizeOfOptionalHeader} bytes is truncated`);
  const nDirs = Math.min(dv.getUint32(opt + lay.numberOfRvaAndSizes, true), (sizeOfOptionalHeader - lay.dataDirectories) / 8);
  const dataDirectories: DataDirectory[] = [];
  for (let i = 0; i < nDirs; i++) {
    const at = opt + lay.dataDirectories + i * 8;
    dataDirectories.push({ virtualAddress: dv.getUint32(at, true), size: dv.getUint32(at + 4, true) });
  }
  const sectionTable = opt + sizeOfOptionalHeader;
  const sectionTableEnd = sectionTable + numberOfSections * SECTION_HEADER_SIZE;
  need(sectionTableEnd, `${numberOfSections} section headers`);
  const sections: PeSection[] = [];
  for (let i = 0; i < numberOfSections; i++) {
    const at = sectionTable + i * SECTION_HEADER_SIZE;
    const nameBytes = bytes.subarray(at, at + 8);
    const nul = nameBytes.indexOf(0);
    const s: PeSection = {
      name: Buffer.from(nameBytes.subarray(0, nul < 0 ? 8 : nul)).toString('latin1'),
      virtualSize: dv.getUint32(at + 8, true),
      virtualAddress: dv.getUint32(at + 12, true),
      sizeOfRawData: dv.getUint32(at + 16, true),
      pointerToRawData: dv.getUint32(at + 20, true),
      characteristics: dv.getUint32(at + 36, true),
      headerOffset: at,
    };
    if (s.sizeOfRawData > 0 && s.pointerToRawData + s.sizeOfRawData > bytes.length) {
      throw new PeFormatError(`section ${s.name} raw data [${s.pointerToRawData}, +${s.sizeOfRawData}) lies past the end of the file (${bytes.length})`);
    }
    sections.push(s);
  }
  return {
    peOffset,
    machine: dv.getUint16(coff, true),
    numberOfSections,
    timeDateStamp: dv.getUint32(coff + 4, true),
    pointerToSymbolTable: dv.getUint32(coff + 8, true),
    numberOfSymbols: dv.getUint32(coff + 12, true),
    sizeOfOptionalHeader,
    characteristics: dv.getUint16(coff + 18, true),
    magic,
    sizeOfCode: dv.getUint32(opt + 4, true),
    sizeOfInitializedData: dv.getUint32(opt + 8, true),
    sizeOfUninitializedData: dv.getUint32(opt + 12, true),
    addressOfEntryPoint: dv.getUint32(opt + 16, true),
    imageBase: magic === PE32PLUS_MAGIC ? dv.getBigUint64(opt + lay.imageBase, true) : BigInt(dv.getUint32(opt + lay.imageBase, true)),
    sectionAlignment: dv.getUint32(opt + 32, true),
    fileAlignment: dv.getUint32(opt + 36, true),
    sizeOfImage: dv.getUint32(opt + 56, true),
    sizeOfHeaders: dv.getUint32(opt + 60, true),
    checkSum: dv.getUint32(opt + 64, true),
    subsystem: dv.getUint16(opt + 68, true),
    dllCharacteristics: dv.getUint16(opt + 70, true),
    dataDirectories,
    sections,
    offsets: {
      coffHeader: coff,
      optionalHeader: opt,
      checkSum: opt + 64,
      dataDirectories: opt + lay.dataDirectories,
      sectionTable,
      sectionTableEnd,
    },
  };
}

/** The bytes a loader maps for a section: VirtualSize of them, zero-filled past the raw data. */
export function sectionData(bytes: Uint8Array, s: PeSection): Uint8Array {
  const raw = bytes.subarray(s.pointerToRawData, s.pointerToRawData + Math.min(s.sizeOfRawData, s.virtualSize));
  if (raw.length === s.virtualSize) return raw;
  const out = new Uint8Array(s.virtualSize);
  out.set(raw);
  return out;
}

export function findSection(h: PeHeaders, name: string): PeSection | undefined {
  return h.sections.find((s) => s.name === name);
}
