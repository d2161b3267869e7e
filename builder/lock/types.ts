/** The pins the input kinds resolve to (builder/inputs/pins.ts), as the lock file stores them. */
export type { DebArchivePin, DebFilePin, DebPackagePin, OciPin, Pin, SourceKey } from '../inputs/pins.ts';
