/**
 * ossify as a library: what the CLI's commands call, with their types. Everything here is
 * also reachable through `ossify …`; the CLI adds only argument parsing and exit codes.
 */
export { loadProfile, type LoadedProfile, type LoadOptions } from './profile/load.ts';
export { build, outputDirFor, type BuildOptions, type BuildResult } from './pipeline.ts';
export type { BuildRecord } from './release/build-json.ts';
export { pushBuild, pushBuilds, type PushOptions, type PushResult } from './release/push.ts';
export { pushLayout } from './oci/push.ts';
export { publishBuild, type PublishOptions, type PublishResult } from './trust/publish.ts';
export { pullRelease, type PullOptions, type PullResult } from './release/pull.ts';
export {
  install,
  upgrade,
  rollback,
  diskStatus,
  formatStatus,
  type InstallOptions,
  type InstallResult,
  type UpgradeOptions,
  type UpgradeResult,
  type RollbackOptions,
  type RollbackResult,
  type StatusReport,
} from './installer/index.ts';
export { writeSquashfs, SquashfsReader, type SquashfsOptions, type SquashfsResult } from './formats/squashfs/index.ts';
export { runDisk, type RunOptions, type RunResult } from './run/qemu.ts';
export { writeInstallerIso, writeIsoFile, type IsoResult, type IsoSource } from './iso/build.ts';
export { writeIso, readIso, type IsoSpec, type IsoFile, type IsoVolume } from './formats/iso9660.ts';
export { OssifyError } from './util/errors.ts';
export { OUTPUTS, OUTPUT_NAMES, resolveOutputs, type OutputName, type OutputSpec } from './outputs/index.ts';
export { writeOutputs } from './outputs/write.ts';
export type { OutputContext, OutputFormat, OutputWrite } from './outputs/types.ts';
export type { WrittenOutput } from './release/build-json.ts';
