import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { lockFileFor } from '../lock/file.ts';
import { compareBytes } from '../tree/tree.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { OssifyError } from '../util/errors.ts';
import { sha256File, sha256Hex } from '../util/hash.ts';
import { MT } from '../oci/media-types.ts';
import type { SourceRecord } from './sbom.ts';

/**
 * The build's provenance: an in-toto Statement v1 with a SLSA Provenance v1 predicate. It
 * names what was built (every artifact, the SBOM and the installer image, by sha256) and
 * from what (the profile digest, the lock file, every input digest, the builder version).
 * It is written unsigned beside the outputs; `ossify sign --build` signs it (DSSE, the
 * image's key) and attaches it to the pushed image. Like the artifacts it is byte-identical
 * across rebuilds: no timestamps, no host names, no paths.
 */

export const PROVENANCE_FILE = 'provenance.intoto.json';
export const STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
export const SLSA_PROVENANCE_V1 = 'https://slsa.dev/provenance/v1';
/** Identifies the shape of externalParameters below; a URN because nothing needs to be fetched from it. */
export const OSSIFY_BUILD_TYPE = 'urn:ossify:build-type:profile:v1';
/** The name the installer image has among the statement's subjects. */
export const INSTALLER_SUBJECT = 'installer-image';

export interface ResourceDescriptor {
  name?: string;
  uri?: string;
  digest?: Record<string, string>;
  mediaType?: string;
  annotations?: Record<string, string>;
}

export interface Statement {
  _type: typeof STATEMENT_V1;
  subject: ResourceDescriptor[];
  predicateType: string;
  predicate: {
    buildDefinition: {
      buildType: string;
      externalParameters: Record<string, unknown>;
      internalParameters: Record<string, unknown>;
      resolvedDependencies: ResourceDescriptor[];
    };
    runDetails: { builder: { id: string; version: Record<string, string> }; metadata?: Record<string, unknown> };
  };
}

export interface ProvenanceParams {
  name: string;
  version: string;
  arch: string;
  /** `sha256:<hex>` of the resolved profile. */
  profileDigest: string;
  profileFile: string;
  epoch: number;
  /** sha256 hex of each artifact beside build.json. */
  artifacts: Record<string, { sha256: string }>;
  sbomSha256: string;
  installerDigest: string;
  sources: readonly SourceRecord[];
  lock?: { file: string; sha256: string };
  builderVersion: string;
}

const hex = (d: string) => d.replace(/^sha256:/, '');

function dependency(s: SourceRecord): ResourceDescriptor {
  const enc = encodeURIComponent;
  // A ResourceDescriptor needs a uri or a digest; a local directory has no digest of its own (its files are in the SBOM).
  const uri = s.kind === 'deb' ? `pkg:deb/debian/${enc(s.name)}${s.version ? `@${enc(s.version)}` : ''}` : s.kind === 'oci' ? `oci://${s.name}` : `file:${enc(s.name)}`;
  return {
    name: s.name,
    uri,
    ...(s.sha256 !== undefined ? { digest: { sha256: s.sha256 } } : {}),
    annotations: { kind: s.kind, ...(s.version !== undefined ? { version: s.version } : {}) },
  };
}

export function makeProvenance(p: ProvenanceParams): Statement {
  const subject: ResourceDescriptor[] = [
    ...Object.keys(p.artifacts)
      .sort(compareBytes)
      .map((n) => ({ name: n, digest: { sha256: hex(p.artifacts[n]!.sha256) } })),
    { name: 'sbom.spdx.json', digest: { sha256: p.sbomSha256 }, mediaType: 'application/spdx+json' },
    { name: INSTALLER_SUBJECT, digest: { sha256: hex(p.installerDigest) }, mediaType: MT.manifest },
  ];
  const sources = [...p.sources].sort((a, b) => compareBytes(`${a.kind}\0${a.name}\0${a.version ?? ''}`, `${b.kind}\0${b.name}\0${b.version ?? ''}`));
  return {
    _type: STATEMENT_V1,
    subject,
    predicateType: SLSA_PROVENANCE_V1,
    predicate: {
      buildDefinition: {
        buildType: OSSIFY_BUILD_TYPE,
        externalParameters: {
          profile: { name: basename(p.profileFile), digest: { sha256: hex(p.profileDigest) } },
          lockfile: p.lock ? { name: basename(p.lock.file), digest: { sha256: p.lock.sha256 } } : null,
          sourceDateEpoch: p.epoch,
        },
        internalParameters: { name: p.name, version: p.version, arch: p.arch },
        resolvedDependencies: sources.map(dependency),
      },
      runDetails: { builder: { id: `pkg:npm/ossify@${p.builderVersion}`, version: { ossify: p.builderVersion } } },
    },
  };
}

export function encodeStatement(s: Statement): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(s, null, 2)}\n`);
}

/** The profile's lock file and its sha256, when the profile has one. */
export async function lockFileDigest(profileFile: string): Promise<{ file: string; sha256: string } | undefined> {
  const file = lockFileFor(profileFile);
  try {
    return { file, sha256: await sha256File(file) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new OssifyError(`cannot read the lock file ${file}`, { cause: err });
  }
}

export async function writeProvenance(outDir: string, p: Omit<ProvenanceParams, 'sbomSha256' | 'lock'>, sbomFile: string): Promise<Statement> {
  const lock = await lockFileDigest(p.profileFile);
  const statement = makeProvenance({ ...p, sbomSha256: sha256Hex(await readFile(sbomFile)), ...(lock ? { lock } : {}) });
  await writeFileAtomic(join(outDir, PROVENANCE_FILE), encodeStatement(statement));
  return statement;
}

export function parseStatement(bytes: Uint8Array, origin: string): Statement {
  let s: Statement;
  try {
    s = JSON.parse(new TextDecoder().decode(bytes)) as Statement;
  } catch (err) {
    throw new OssifyError(`${origin} is not JSON`, { cause: err });
  }
  if (s?._type !== STATEMENT_V1 || !Array.isArray(s.subject) || typeof s.predicateType !== 'string') throw new OssifyError(`${origin} is not an in-toto v1 statement`);
  return s;
}

/** The sha256 a statement gives the named subject, if any. */
export function subjectDigest(s: Statement, name: string): string | undefined {
  return s.subject.find((x) => x.name === name)?.digest?.sha256;
}
