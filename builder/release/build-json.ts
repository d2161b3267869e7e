import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ReleaseBootSchema } from '../boot/release-boot.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { canonicalJson, sha256Hex } from '../util/hash.ts';
import { BUILD_JSON } from './artifacts.ts';

const Hex64 = z.string().regex(/^(sha256:)?[a-f0-9]{64}$/, 'must be a sha256 hex digest');
const Count = z.number().int().nonnegative();
const ArtifactSchema = z.object({ sha256: Hex64, size: Count });

/** What an input was made from: build.json `sources`, the SBOM and the provenance. */
const SourceSchema = z.object({ kind: z.string(), name: z.string(), version: z.string().optional(), sha256: z.string().optional() });
export type SourceRecord = z.infer<typeof SourceSchema>;

/** One image format the build wrote from the disk (`outputs:`), with its sha256. */
const OutputSchema = z.object({ format: z.string(), file: z.string(), sha256: z.string(), size: Count });
export type WrittenOutput = z.infer<typeof OutputSchema>;

/** verified boot: the dm-verity tree of the root image (artifact rootfs.verity). */
const VeritySchema = z.looseObject({
  roothash: z.string(),
  salt: z.string(),
  /** Bytes from the start of a root slot to the verity superblock. */
  hashOffset: Count,
  dataBlocks: Count,
  dataBlockSize: Count,
  hashBlockSize: Count,
  algorithm: z.literal('sha256'),
});
export type BuildVerity = z.infer<typeof VeritySchema>;

const PartitionSchema = z.looseObject({ label: z.string(), guid: z.string(), typeGuid: z.string(), offset: Count, size: z.number().int().positive() });
const SlotsSchema = z.looseObject({ rootSize: z.number().int().positive() });

/**
 * build.json: the record of one build, and the contract with push, pull, install and iso.
 * Parsed loosely, so an older ossify keeps reading what a newer one adds.
 */
export const BuildJsonSchema = z.looseObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'must be a plain name'),
  version: z.string().min(1),
  arch: z.string().min(1),
  profileDigest: z.string().min(1),
  epoch: Count,
  kernelVersion: z.string(),
  artifacts: z.record(z.string(), ArtifactSchema),
  slots: SlotsSchema,
  verity: VeritySchema.optional(),
  /** How the release boots (entries, kernel arguments, timeout, tries, Secure Boot enrolment): release.json carries it to every installer. */
  boot: ReleaseBootSchema,
  partitions: z.array(PartitionSchema),
  /** The disk in each image format the build wrote (`outputs:`), each with its sha256. */
  outputs: z.array(OutputSchema),
  sources: z.array(SourceSchema),
  timings: z.record(z.string(), z.number()),
  /** fleet: a site build's profile digest without its site data (what its OS artifacts derive from), and the site (its seed is artifact site.tar). */
  baseDigest: z.string().optional(),
  site: z.looseObject({ name: z.string() }).optional(),
  /** The installer image's `org.opencontainers.image.source` and `.revision` labels, when a build output carries them. */
  source: z.string().optional(),
  revision: z.string().optional(),
});
/** What the build writes. */
export type BuildRecord = z.infer<typeof BuildJsonSchema>;

/**
 * How build.json is read: what a release is made of must be there; the rest may be missing
 * from a build by an older ossify, whose `boot` held only `entries` and a `secureBoot` flag
 * (read with parseBuildBoot) and whose verity root hash could stand at the top.
 */
const BuildJsonReadSchema = BuildJsonSchema.partial({ epoch: true, kernelVersion: true, boot: true, partitions: true, outputs: true, sources: true, timings: true }).extend({
  slots: SlotsSchema.partial().optional(),
  verity: VeritySchema.partial().optional(),
  boot: z.unknown().optional(),
  partitions: z.array(PartitionSchema.partial({ guid: true, typeGuid: true, offset: true })).optional(),
  roothash: z.string().optional(),
});
/** What a reader of build.json gets. */
export type BuildJson = z.infer<typeof BuildJsonReadSchema>;

/** build.json's text, checked against its schema: a build never writes a record its readers refuse. */
export function encodeBuildJson(record: BuildRecord): string {
  const r = BuildJsonSchema.safeParse(record);
  if (!r.success) throw new OssifyError(`${BUILD_JSON}: ${r.error.issues[0]?.path.join('.')}: ${r.error.issues[0]?.message}`);
  return `${JSON.stringify(record, null, 2)}\n`;
}

export async function loadBuildJson(outDir: string): Promise<BuildJson> {
  const p = join(outDir, BUILD_JSON);
  let text: string;
  try {
    text = await readFile(p, 'utf8');
  } catch (err) {
    throw new InputError(`${outDir} is not an ossify build output: cannot read ${BUILD_JSON}`, { cause: err, hint: 'run ossify build first, or pass out/<name>-<version>/' });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InputError(`${p} is not valid JSON`, { cause: err });
  }
  const r = BuildJsonReadSchema.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new InputError(`${p}: ${first ? `${first.path.join('.') || '(root)'}: ${first.message}` : 'invalid'}`);
  }
  return r.data;
}

/**
 * build.json without what varies between identical builds (timings) and what the installer
 * image does not carry (the disk's other image formats), as the layout's cache key.
 */
export function buildDigest(build: BuildJson): string {
  const { timings: _t, outputs: _o, ...rest } = build;
  return `sha256:${sha256Hex(canonicalJson(rest))}`;
}
