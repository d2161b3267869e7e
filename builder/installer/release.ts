import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BUILD_JSON, PAYLOAD_REQUIRED, RELEASE_JSON, ROOTFS } from '../release/artifacts.ts';
import { loadBuildJson, type BuildJson } from '../release/build-json.ts';
import { pullRelease } from '../release/pull.ts';
import { encodeRelease, parseRelease, releasesOfBuild, rfc3339, type Release } from '../release/release-json.ts';
import { parseReference, repoName } from '../oci/reference.ts';
import { RegistryClient, type RegistryClientOptions } from '../oci/registry.ts';
import { sha256File } from '../util/hash.ts';
import { InputError } from '../util/errors.ts';
import { normaliseArch } from '../arch.ts';

/**
 * A release source: a directory holding the payload files (PAYLOAD_REQUIRED and the others) and
 * the record that pins them (`release.json` as `ossify pull` writes it, or the `build.json`
 * of a build output). `--image` pulls into a temporary directory and then is the same thing.
 * Nothing from a source is used before `verifyRelease` has checked it against its record.
 */
export interface ReleaseSource {
  dir: string;
  release: Release;
  /** Seconds since the epoch every timestamp written for this release uses. */
  epoch: number;
  /** release.json as it goes onto the ESP next to the slot's kernel. */
  releaseJson: string;
  origin: { kind: 'dir' } | { kind: 'image'; reference: string; manifestDigest: string };
  /** The build record when the source is a build output (partition sizes, boot settings). */
  build: BuildJson | undefined;
  path(artifact: string): string;
  /** Removes what fetching the source created (the temporary pull directory). */
  cleanup(): Promise<void>;
}

const hexOf = (s: string) => s.replace(/^sha256:/, '');

/** The release.json a build output's installer image would carry, byte for byte. */
export function releaseFromBuild(build: BuildJson, origin: string): Release {
  if (build.epoch === undefined) throw new InputError(`${origin}: build.json has no epoch`);
  return releasesOfBuild(build, rfc3339(build.epoch), `${origin}/${BUILD_JSON}`).release;
}

function epochOf(release: Release, origin: string): number {
  const ms = Date.parse(release.created);
  if (Number.isNaN(ms)) throw new InputError(`${origin}: release.json created ${JSON.stringify(release.created)} is not a date`);
  return Math.floor(ms / 1000);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Opens a directory as a release source: release.json when present, else build.json. */
export async function openReleaseDir(dirArg: string): Promise<ReleaseSource> {
  const dir = resolve(dirArg);
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new InputError(`release source ${dirArg} is not a directory`, { hint: 'pass a build output (out/<name>-<version>/) or a directory written by ossify pull' });
  let release: Release;
  let build: BuildJson | undefined;
  let releaseJson: string;
  if (await exists(join(dir, RELEASE_JSON))) {
    const text = await readFile(join(dir, RELEASE_JSON), 'utf8');
    try {
      release = parseRelease(text, dirArg);
    } catch (err) {
      throw new InputError((err as Error).message, { cause: err });
    }
    releaseJson = text;
  } else if (await exists(join(dir, BUILD_JSON))) {
    build = await loadBuildJson(dir);
    release = releaseFromBuild(build, dirArg);
    releaseJson = encodeRelease(release);
  } else {
    throw new InputError(`${dirArg} holds neither release.json nor build.json`, { hint: 'pass a build output (out/<name>-<version>/) or a directory written by ossify pull' });
  }
  for (const n of PAYLOAD_REQUIRED) {
    if (!release.artifacts[n]) throw new InputError(`${dirArg}: the release lists no ${n}`);
  }
  return {
    dir,
    release,
    epoch: build?.epoch ?? epochOf(release, dirArg),
    releaseJson,
    origin: { kind: 'dir' },
    build,
    path: (name) => join(dir, name),
    cleanup: async () => {},
  };
}

export interface PullSourceOptions extends Pick<RegistryClientOptions, 'insecure' | 'caFile'> {
  /** Accept a reference without a digest (resolved to one, once, before anything is pulled). */
  allowTag?: boolean;
  /** Architecture to take from a multi-arch index. */
  arch?: string;
}

/** Pulls `REPO@sha256:…` through the OCI module into a temporary directory (every byte verified there). */
export async function pullReleaseSource(refArg: string, opts: PullSourceOptions = {}): Promise<ReleaseSource> {
  const ref = parseReference(refArg);
  let pinned = refArg;
  if (ref.digest === undefined) {
    if (!opts.allowTag) {
      throw new InputError(`${refArg} has no digest: a tag can point at another image tomorrow`, {
        hint: `pin it: ${repoName(ref)}@sha256:<digest> as printed by ossify push (or pass --allow-tag)`,
      });
    }
    const client = await RegistryClient.create(ref.registry, opts);
    try {
      const m = await client.getManifest(ref.repository, ref.tag ?? 'latest');
      pinned = `${repoName(ref)}@${m.digest}`;
    } finally {
      await client.close();
    }
  }
  const tmp = await mkdtemp(join(tmpdir(), 'ossify-release-'));
  const cleanup = () => rm(tmp, { recursive: true, force: true });
  try {
    const out = join(tmp, 'payload');
    const pulled = await pullRelease(pinned, out, {
      ...(opts.insecure ? { insecure: true } : {}),
      ...(opts.caFile !== undefined ? { caFile: opts.caFile } : {}),
      ...(opts.arch !== undefined ? { arch: opts.arch } : {}),
    });
    const src = await openReleaseDir(out);
    return { ...src, origin: { kind: 'image', reference: pulled.reference, manifestDigest: pulled.manifestDigest }, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

export interface ReleaseTarget {
  arch: string;
  rootSlotSize: number;
}

/**
 * Checks a source against its record and a target: every artifact's size and sha256, the
 * architecture, and that the root image fits a slot. All refusals are input errors (exit 2).
 */
export async function verifyRelease(src: ReleaseSource, target: ReleaseTarget): Promise<void> {
  const r = src.release;
  if (normaliseArch(r.arch) !== normaliseArch(target.arch)) {
    throw new InputError(`${r.name} ${r.version} is built for ${r.arch}, but the disk is ${target.arch}`, { hint: 'use the release built for this machine\'s architecture' });
  }
  const need = Math.max(r.requirements.minRootSlotSize, r.artifacts[ROOTFS]!.size);
  if (need > target.rootSlotSize) {
    throw new InputError(`${r.name} ${r.version} needs a ${need}-byte root slot, but the disk's slots are ${target.rootSlotSize} bytes`, {
      hint: 'install onto a disk with larger root slots (disk.root in the profile)',
    });
  }
  for (const [name, want] of Object.entries(r.artifacts)) {
    const p = src.path(name);
    const st = await stat(p).catch(() => undefined);
    if (!st?.isFile()) throw new InputError(`${src.dir}/${name} is missing but the release lists it`);
    if (st.size !== want.size) throw new InputError(`${src.dir}/${name} is ${st.size} bytes, the release says ${want.size}: digest mismatch`);
    const got = await sha256File(p);
    if (got !== hexOf(want.sha256)) {
      throw new InputError(`${src.dir}/${name} has sha256 ${got}, the release says ${hexOf(want.sha256)}: digest mismatch`, { hint: 'the source was modified or damaged; rebuild or pull it again' });
    }
  }
}

export interface SourceFlags extends PullSourceOptions {
  image?: string;
  from?: string;
}

/** `--image REF` or `--from DIR`, exactly one. */
export async function openReleaseSource(flags: SourceFlags): Promise<ReleaseSource> {
  if ((flags.image === undefined) === (flags.from === undefined)) {
    throw new InputError('name the release with exactly one of --image REPO@sha256:… or --from DIR', {
      hint: '--from takes a build output (out/<name>-<version>/) or a directory written by ossify pull',
    });
  }
  if (flags.from !== undefined) return openReleaseDir(flags.from);
  const { image, from: _from, ...pull } = flags;
  return pullReleaseSource(image!, pull);
}
