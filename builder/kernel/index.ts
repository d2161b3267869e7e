export { findKernel, modulesDirOf, readKernelConfig, type KernelInfo } from './find.ts';
export { loadKernel } from './layout.ts';
export { bzImageVersion } from './bzimage.ts';
export { canonicalModuleName, resolveModules, type ModulePlan, type PlannedModule } from './modules.ts';
export { readModinfo } from './elf.ts';
export { resolveTreePath } from '../tree/walk.ts';
