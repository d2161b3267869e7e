import type { Command } from 'commander';
import { openLock } from '../lock/lock.ts';
import { loadProfile } from '../profile/load.ts';
import { build } from '../pipeline.ts';
import { defaultProgressMode } from '../steps/progress.ts';
import { progressReporter } from '../oci/progress.ts';
// trust: --verify-reproducible, and the SBOM attached to a pushed image
import { verifyReproducible } from '../reproducible.ts';
import { publishBuild } from '../trust/publish.ts';
import { parseReference } from '../oci/reference.ts';
import { join } from 'node:path';
// fleet: the stage cache (--no-cache, --cache-from/--cache-to) and many profiles at once (--jobs, --matrix)
import { closeRemoteCaches, openRemoteCaches, type RemoteCaches } from '../cache/remote.ts';
import { buildMatrix, failureExitCode, matrixProfiles, matrixPushTag, type MatrixBuild } from '../matrix.ts';
import type { LoadedProfile } from '../profile/load.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { OUTPUT_NAMES, type OutputName } from '../outputs/index.ts';
import { addRegistryOptions, registryOptions, type RegistryFlags } from './registry-flags.ts';

interface BuildFlags extends RegistryFlags {
  out: string;
  cacheDir?: string;
  json?: boolean;
  push?: string;
  frozen?: boolean;
  verifyReproducible?: boolean;
  cache?: boolean;
  cacheFrom?: string;
  cacheTo?: string;
  jobs?: string;
  matrix?: string;
  output?: string[];
}

/** `--output qcow2,vhd --output gce`: names, each a known format. */
function parseOutputs(values: string[] | undefined): OutputName[] | undefined {
  if (!values?.length) return undefined;
  const names = values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  for (const n of names) {
    if (!(OUTPUT_NAMES as string[]).includes(n)) throw new InputError(`--output ${n}: unknown image format`, { hint: `choose from ${OUTPUT_NAMES.join(', ')}` });
  }
  if (names.length === 0) throw new InputError('--output names no format', { hint: `choose from ${OUTPUT_NAMES.join(', ')}` });
  return names as OutputName[];
}

export function registerBuildCommand(program: Command): void {
  addRegistryOptions(
    program
      .command('build')
      .description('build the images a profile describes into out/<name>-<version>/ (disk, rootfs, kernel, initramfs, installer image)')
      .argument('[profiles...]', 'profile YAML file(s); several are built at once, sharing the stage cache (see --jobs)')
      .option('-o, --out <dir>', 'output root directory', 'out')
      .option('--cache-dir <dir>', 'input cache directory (default: <out>/cache)')
      .option('--push <repo[:tag]>', 'push the installer image and print REPO@sha256:DIGEST'),
    'with --push or --cache-from/--cache-to',
  )
    .option('--json', 'print the build record as JSON on stdout')
    .option('--frozen', 'require <profile>.lock.yaml to pin every input exactly as the profile says (fail instead of resolving)')
    .option('--verify-reproducible', 'build a second time in a child process (fresh directory, other TZ, umask and locale) and fail unless every output is byte-identical')
    .option('--no-cache', 'run every step: neither read nor write the stage cache (<cache-dir>/stages)')
    .option('--cache-from <repo>', 'also look stages up in this registry repository (verified before use)')
    .option('--cache-to <repo>', 'push the stages of a successful build to this registry repository')
    .option('--matrix <path>', 'build the profiles in a directory (*.yaml) or listed in a file (one path a line, or a YAML list)')
    .option('-j, --jobs <n>', 'with several profiles: builds at a time', '2')
    .option('--output <formats>', `image formats to write the disk in, instead of the profile's outputs: (repeatable or comma-separated: ${OUTPUT_NAMES.join(', ')})`, (v: string, prev: string[] = []) => [...prev, v])
    .action(async (profileArgs: string[], o: BuildFlags) => {
      const outputs = parseOutputs(o.output);
      // fleet: several profiles build in one process; one goes the way it always went.
      const files = [...profileArgs, ...(o.matrix ? await matrixProfiles(o.matrix) : [])];
      if (files.length === 0) throw new InputError('no profile to build', { hint: 'ossify build PROFILE.yaml…, or --matrix DIR' });
      if (o.cache === false && (o.cacheFrom !== undefined || o.cacheTo !== undefined)) throw new InputError('--no-cache and --cache-from/--cache-to contradict each other');
      const remoteCache = await openRemoteCaches({ from: o.cacheFrom, to: o.cacheTo }, registryOptions(o));
      if (files.length > 1 || o.matrix) return buildMany(files, o, remoteCache);
      const profileFile = files[0]!;
      const loaded = await loadProfile(profileFile);
      // The lock next to the profile, when there is one; --frozen checks it against the profile before anything is built.
      const lock = await openLock(loaded, o.frozen === true);
      const opts: Parameters<typeof build>[1] = { outRoot: o.out, progress: o.json ? 'silent' : defaultProgressMode() };
      if (o.cacheDir) opts.cacheDir = o.cacheDir;
      if (lock) opts.lock = lock;
      if (o.cache === false) opts.stageCache = false;
      if (remoteCache) opts.remoteCache = remoteCache;
      if (outputs) opts.outputs = outputs;
      const { outDir, record, installer, cache, cacheWarnings } = await build(loaded, opts).finally(() => closeRemoteCaches(remoteCache));
      for (const w of [...(lock?.warnings ?? []), ...cacheWarnings]) process.stderr.write(`warning: ${w}\n`);
      // trust: checked before any push, so a non-reproducible build is never published.
      if (o.verifyReproducible) {
        const report = await verifyReproducible({ profileFile, outDir, cacheDir: o.cacheDir ?? join(o.out, 'cache'), buildArgs: [...(o.frozen ? ['--frozen'] : []), '--no-cache', ...(outputs ? ['--output', outputs.join(',')] : [])], stderr: o.json ? 'pipe' : 'inherit' });
        process.stderr.write(`reproducible: a second build (TZ=${report.environment.TZ}, umask ${report.environment.umask}, LC_ALL=${report.environment.LC_ALL}) is byte-identical, installer image ${report.installerDigest}\n`);
      }
      let pushed: string | undefined;
      if (o.push) {
        const progress = o.json ? undefined : progressReporter();
        try {
          // trust: the SBOM travels with the image as an OCI referrer.
          pushed = (await publishBuild(outDir, o.push, { ...registryOptions(o), ...(progress ? { onProgress: (e) => progress.onProgress(e) } : {}) })).reference;
        } finally {
          progress?.finish();
        }
      }
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ outDir, ...record, installer, cache, ...(pushed ? { pushed } : {}) }, null, 2)}\n`);
        return;
      }
      process.stdout.write(`built ${record.name} ${record.version} (profile ${record.profileDigest})\n`);
      for (const [name, a] of Object.entries(record.artifacts)) {
        process.stdout.write(`  ${outDir}/${name}  ${a.size} bytes  sha256:${a.sha256}\n`);
      }
      for (const out of record.outputs.filter((x) => !record.artifacts[x.file])) {
        process.stdout.write(`  ${outDir}/${out.file}  ${out.size} bytes  sha256:${out.sha256}  (${out.format})\n`);
      }
      process.stdout.write(`  ${installer.layoutDir}  installer image ${installer.manifestDigest}\n`);
      if (pushed) process.stdout.write(`${pushed}\n`);
    });
}

// fleet ---------------------------------------------------------------------------

function siteLabel(l: LoadedProfile): string {
  return `${l.profile.name} ${l.profile.version}${l.profile.site ? ` site ${l.profile.site.name}` : ''}`;
}

function cacheSummary(b: MatrixBuild): string {
  const counts: Record<string, number> = {};
  for (const s of Object.values(b.result.cache)) counts[s] = (counts[s] ?? 0) + 1;
  return Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ');
}

/** `ossify build a.yaml b.yaml …`: every profile, `--jobs` at a time; one line (or one JSON object) per build. */
async function buildMany(files: string[], o: BuildFlags, remoteCache: RemoteCaches | undefined): Promise<void> {
  if (o.verifyReproducible) throw new InputError('--verify-reproducible checks one profile at a time');
  if (o.push && parseReference(o.push).tag !== undefined) {
    throw new InputError(`--push ${o.push} names a tag, but several images are pushed`, { hint: 'give a repository: each image is tagged <version> (a site: <version>-<site>)' });
  }
  const jobs = Number(o.jobs ?? 2);
  if (!Number.isInteger(jobs) || jobs < 1) throw new InputError(`--jobs ${o.jobs} is not a positive whole number`);
  const t0 = performance.now();
  let done = 0;
  const out: Record<string, unknown>[] = [];
  const run = await buildMatrix(files, {
    jobs,
    outRoot: o.out,
    ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
    ...(o.cache === false ? { stageCache: false } : {}),
    ...(remoteCache ? { remoteCache } : {}),
    ...(o.frozen ? { frozen: true } : {}),
    ...(o.output?.length ? { outputs: parseOutputs(o.output)! } : {}),
    onDone: async ({ file, build: b, error }) => {
      done++;
      if (!b) {
        const msg = error instanceof Error ? error.message : String(error);
        process.stderr.write(`[${done}/${files.length}] ${file}: error: ${msg}\n`);
        if (error instanceof OssifyError && error.hint) process.stderr.write(`  hint: ${error.hint}\n`);
        return;
      }
      for (const w of b.result.cacheWarnings) process.stderr.write(`warning: ${file}: ${w}\n`);
      let pushed: string | undefined;
      if (o.push) {
        pushed = (await publishBuild(b.result.outDir, `${o.push}:${matrixPushTag(b.loaded.profile)}`, registryOptions(o))).reference;
      }
      if (o.json) out.push({ file, outDir: b.result.outDir, ...b.result.record, installer: b.result.installer, cache: b.result.cache, ms: b.ms, ...(pushed ? { pushed } : {}) });
      else {
        process.stdout.write(`[${done}/${files.length}] built ${siteLabel(b.loaded)} in ${b.ms} ms (${cacheSummary(b)}): ${b.result.outDir}  installer image ${b.result.installer.manifestDigest}\n`);
        if (pushed) process.stdout.write(`${pushed}\n`);
      }
    },
  }).finally(() => closeRemoteCaches(remoteCache));
  const ms = Math.round(performance.now() - t0);
  if (o.json) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  else process.stderr.write(`${run.builds.length} of ${files.length} profiles built in ${ms} ms (${jobs} at a time)${run.failures.length ? `; ${run.failures.length} failed` : ''}\n`);
  if (run.failures.length) {
    const code = failureExitCode(run.failures);
    throw new OssifyError(`${run.failures.length} of ${files.length} builds failed: ${run.failures.map((f) => f.file).join(', ')}`, { exitCode: code === 2 ? 2 : 1 });
  }
}
