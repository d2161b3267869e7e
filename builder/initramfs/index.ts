export { buildInitramfs, checkInitramfsCompression, type InitramfsCompression } from './build.ts';
export { INIT_SCRIPT } from './init-script.ts';
export { MODULE_LIST_PATH, buildInitramfsTree, type InitramfsSpec } from './tree.ts';
