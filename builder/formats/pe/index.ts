export {
  parsePe,
  sectionData,
  findSection,
  PeFormatError,
  PE32_MAGIC,
  PE32PLUS_MAGIC,
  DIR_SECURITY,
  SECTION_HEADER_SIZE,
  SCN_CNT_CODE,
  SCN_CNT_INITIALIZED_DATA,
  SCN_MEM_EXECUTE,
  SCN_MEM_READ,
  SCN_MEM_WRITE,
  type PeHeaders,
  type PeSection,
  type DataDirectory,
} from './headers.ts';
export { addPeSections, type NewSection } from './sections.ts';
export { peChecksum, updatePeChecksum } from './checksum.ts';
