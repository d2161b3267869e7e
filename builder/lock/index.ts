export { lockFileFor, readLock, renderLock, writeLock, LOCK_VERSION, type LockEntry, type LockFile } from './file.ts';
export { lockProfile, openLock, resolvePin, type LockOptions, type LockResult } from './lock.ts';
export { LockPins } from './pins.ts';
export { profileInputs, sourceKey } from './sources.ts';
export type { DebArchivePin, DebFilePin, DebPackagePin, OciPin, Pin, SourceKey } from './types.ts';
