import { z } from 'zod';
import { encodeReleaseBoot, parseBuildBoot, ReleaseBootSchema } from '../boot/release-boot.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { OPTIONAL_ARTIFACTS, PAYLOAD_REQUIRED, RELEASE_JSON, ROOTFS, ROOTFS_VERITY, SITE_SEED } from './artifacts.ts';
import type { BuildJson } from './build-json.ts';

const Size = z.number().int().positive();

/**
 * release.json: what the device (and `ossify pull`) reads to know what it is installing.
 * Parsed loosely: a newer ossify may add keys an older installer does not know.
 */
const ReleaseSchema = z.looseObject({
  schemaVersion: z.literal(1),
  name: z.string(),
  version: z.string(),
  arch: z.string(),
  profileDigest: z.string(),
  /**
   * fleet (docs/fleet.md): a site release's base digest (its profile's without `site:`), which
   * the OS artifacts, disk GUIDs and FAT serial derive from; absent when it equals profileDigest.
   */
  baseDigest: z.string().optional(),
  created: z.string(),
  artifacts: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/), z.object({ sha256: z.string().regex(/^[a-f0-9]{64}$/), size: z.number().int().nonnegative() })),
  requirements: z.looseObject({ minRootSlotSize: z.number().int().nonnegative() }),
  roothash: z.string().optional(),
  /** How the release boots, as its build wrote disk.raw; absent in a release made by an older ossify. */
  boot: ReleaseBootSchema.optional(),
  /** The partition sizes of its build's disk.raw (bytes), which a new disk gets; absent in a release made by an older ossify. */
  disk: z.looseObject({ esp: Size, root: Size, state: Size }).optional(),
});
export type Release = z.infer<typeof ReleaseSchema>;

export function rfc3339(epoch: number): string {
  return new Date(epoch * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

const hexOf = (s: string) => s.replace(/^sha256:/, '');

/**
 * The release.json of a build output and of its base: the same for an OS build; for a site
 * build the first adds site.tar and names the base digest, the second (the payload layer's,
 * shared by every site of the base) describes the OS alone.
 */
export function releasesOfBuild(build: BuildJson, created: string, origin: string): { release: Release; base: Release } {
  for (const n of PAYLOAD_REQUIRED) {
    if (!build.artifacts[n]) throw new InputError(`${origin} lists no ${n} artifact; a release needs ${PAYLOAD_REQUIRED.join(', ')}`, { hint: 'rebuild with ossify build' });
  }
  const artifacts: Release['artifacts'] = {};
  for (const n of [...PAYLOAD_REQUIRED, ...OPTIONAL_ARTIFACTS]) {
    const a = build.artifacts[n];
    if (a) artifacts[n] = { sha256: hexOf(a.sha256), size: a.size };
  }
  const roothash = build.verity?.roothash ?? build.roothash;
  const boot = parseBuildBoot(build.boot, origin);
  const part = (label: string) => build.partitions?.find((p) => p.label === label)?.size;
  const [esp, root, state] = [part('ESP'), build.slots?.rootSize ?? part('ROOT-A'), part('STATE')];
  const base: Release = {
    schemaVersion: 1,
    name: build.name,
    version: build.version,
    arch: build.arch,
    profileDigest: build.profileDigest,
    created,
    artifacts,
    requirements: { minRootSlotSize: artifacts[ROOTFS]!.size + (artifacts[ROOTFS_VERITY]?.size ?? 0) },
    ...(roothash !== undefined ? { roothash } : {}),
    ...(boot ? { boot } : {}),
    ...(esp !== undefined && root !== undefined && state !== undefined ? { disk: { esp, root, state } } : {}),
  };
  const site = build.artifacts[SITE_SEED];
  if (!site) return { release: base, base };
  return {
    release: {
      ...base,
      // What the installer derives the disk's GUIDs and FAT serial from, as the build did.
      ...(build.baseDigest !== undefined && build.baseDigest !== build.profileDigest ? { baseDigest: build.baseDigest } : {}),
      artifacts: { ...artifacts, [SITE_SEED]: { sha256: hexOf(site.sha256), size: site.size } },
    },
    base: { ...base, profileDigest: build.baseDigest ?? build.profileDigest },
  };
}

/** release.json: stable key order, one artifact per line so the script can read it without jq. */
export function encodeRelease(r: Release): string {
  const lines: string[] = ['{'];
  lines.push(`  "schemaVersion": ${r.schemaVersion},`);
  for (const k of ['name', 'version', 'arch', 'profileDigest', 'created'] as const) {
    lines.push(`  ${JSON.stringify(k)}: ${JSON.stringify(r[k])},`);
    if (k === 'profileDigest' && r.baseDigest !== undefined) lines.push(`  "baseDigest": ${JSON.stringify(r.baseDigest)},`);
  }
  if (r.roothash !== undefined) lines.push(`  "roothash": ${JSON.stringify(r.roothash)},`);
  if (r.boot !== undefined) lines.push(...encodeReleaseBoot(r.boot));
  if (r.disk !== undefined) lines.push(`  "disk": {"esp": ${r.disk.esp}, "root": ${r.disk.root}, "state": ${r.disk.state}},`);
  lines.push(`  "requirements": {"minRootSlotSize": ${r.requirements.minRootSlotSize}},`);
  lines.push('  "artifacts": {');
  const names = Object.keys(r.artifacts).sort();
  names.forEach((n, i) => {
    const a = r.artifacts[n]!;
    lines.push(`    ${JSON.stringify(n)}: {"sha256": ${JSON.stringify(a.sha256)}, "size": ${a.size}}${i < names.length - 1 ? ',' : ''}`);
  });
  lines.push('  }', '}', '');
  return lines.join('\n');
}

export function parseRelease(text: string, origin: string): Release {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new OssifyError(`${origin}: ${RELEASE_JSON} is not valid JSON`, { cause: err });
  }
  const r = ReleaseSchema.safeParse(raw);
  if (!r.success) throw new OssifyError(`${origin}: ${RELEASE_JSON} is invalid: ${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`);
  return r.data;
}
