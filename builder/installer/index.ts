/** Install, upgrade, rollback and status of ossify A/B disks (files or block devices). */
export { install, type InstallOptions, type InstallResult } from './install.ts';
export { upgrade, type UpgradeOptions, type UpgradeResult } from './upgrade.ts';
export { rollback, type RollbackOptions, type RollbackResult } from './rollback.ts';
export { diskStatus, formatStatus, type StatusReport, type SlotStatus } from './status.ts';
export { openReleaseDir, openReleaseSource, pullReleaseSource, verifyRelease, releaseFromBuild, type ReleaseSource, type SourceFlags } from './release.ts';
export { readBootState, compareEntries, compareVersions, type BootState, type SlotEntry } from './boot-state.ts';
export { probeLayout, type OssifyLayout } from './layout.ts';
export { openDisk, type Disk } from './disk.ts';
export { DEVICE_SCRIPT } from './device-script.ts';
export { CRASH_ENV } from './steps.ts';
export { writePayloadDisk } from './payload-disk.ts';
