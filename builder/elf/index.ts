export { ElfFormatError, isElf, readDynamic, type DynamicInfo } from './dynamic.ts';
export { ldSoConfDirs, multiarchTriplet, systemLibraryDirs } from './search.ts';
export { programClosure, type Closure } from './closure.ts';
export { programsTree } from './programs.ts';
