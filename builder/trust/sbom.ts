import { createHash } from 'node:crypto';
import { type FileTree, compareBytes } from '../tree/tree.ts';
import { bytesContent } from '../tree/content.ts';
import { sha256Hex } from '../util/hash.ts';
import type { SourceRecord } from '../release/build-json.ts';

/**
 * The SPDX 2.3 (JSON) software bill of materials of a build: one package for the image,
 * one per input (with version, origin and sha256), and every regular file of the rootfs
 * with its SHA-1 (the spec's mandatory file checksum) and SHA-256. Nothing in it comes from
 * the clock or the host: the namespace and creation time derive from the profile digest and
 * the build epoch, and every list is sorted.
 */

/** Where the SBOM sits inside the rootfs; it describes every other file there. */
export const SBOM_ROOTFS_PATH = 'usr/share/ossify/sbom.spdx.json';
/** Its name beside the build outputs. */
export const SBOM_FILE = 'sbom.spdx.json';
export const SPDX_MEDIA_TYPE = 'application/spdx+json';

/** An input as build.json records it. */
export type { SourceRecord } from '../release/build-json.ts';

export interface SbomParams {
  name: string;
  version: string;
  arch: string;
  profileDigest: string;
  epoch: number;
  builderVersion: string;
  sources: readonly SourceRecord[];
}

interface SpdxChecksum {
  algorithm: 'SHA1' | 'SHA256';
  checksumValue: string;
}

export interface SpdxFile {
  SPDXID: string;
  fileName: string;
  checksums: SpdxChecksum[];
  licenseConcluded: 'NOASSERTION';
  copyrightText: 'NOASSERTION';
}

export interface SpdxPackage {
  SPDXID: string;
  name: string;
  versionInfo?: string;
  downloadLocation: string;
  filesAnalyzed: boolean;
  packageVerificationCode?: { packageVerificationCodeValue: string; packageVerificationCodeExcludedFiles: string[] };
  checksums?: SpdxChecksum[];
  sourceInfo?: string;
  primaryPackagePurpose?: string;
  externalRefs?: { referenceCategory: string; referenceType: string; referenceLocator: string }[];
  licenseConcluded: 'NOASSERTION';
  licenseDeclared: 'NOASSERTION';
  copyrightText: 'NOASSERTION';
}

export interface SpdxDocument {
  spdxVersion: 'SPDX-2.3';
  dataLicense: 'CC0-1.0';
  SPDXID: 'SPDXRef-DOCUMENT';
  name: string;
  documentNamespace: string;
  creationInfo: { created: string; creators: string[] };
  packages: SpdxPackage[];
  files: SpdxFile[];
  relationships: { spdxElementId: string; relationshipType: string; relatedSpdxElement: string }[];
}

export const IMAGE_SPDXID = 'SPDXRef-Image';

function rfc3339(epoch: number): string {
  return new Date(epoch * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Package URLs let scanners match a Debian package to advisories without guessing. */
function purl(s: SourceRecord): string | undefined {
  const enc = encodeURIComponent;
  if (s.kind === 'deb') return `pkg:deb/debian/${enc(s.name)}${s.version ? `@${enc(s.version)}` : ''}`;
  if (s.kind === 'oci' && s.sha256) {
    const slash = s.name.lastIndexOf('/');
    return `pkg:oci/${enc(s.name.slice(slash + 1))}@${enc(`sha256:${s.sha256}`)}?repository_url=${enc(s.name)}${s.version ? `&tag=${enc(s.version)}` : ''}`;
  }
  return undefined;
}

const SOURCE_INFO: Record<string, string> = {
  deb: 'Debian binary package, fetched with apt-get download and verified by sha256',
  oci: 'OCI image, pulled by manifest digest',
  tar: 'tar archive, verified by sha256',
  dir: 'local directory overlay (its files are listed with their checksums)',
  files: 'files declared in the profile (listed with their checksums)',
};

function inputPackage(s: SourceRecord, n: number): SpdxPackage {
  const ref = purl(s);
  return {
    SPDXID: `SPDXRef-Input-${n}`,
    name: s.name,
    ...(s.version !== undefined ? { versionInfo: s.version } : {}),
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: false,
    ...(s.sha256 !== undefined ? { checksums: [{ algorithm: 'SHA256' as const, checksumValue: s.sha256 }] } : {}),
    sourceInfo: `${s.kind}: ${SOURCE_INFO[s.kind] ?? 'input'}`,
    ...(ref ? { externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: ref }] } : {}),
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
  };
}

interface FileDigest {
  path: string;
  sha1: string;
  sha256: string;
}

/** SHA-1 and SHA-256 of every regular file (hard links resolved), in byte order of path, one read each. */
export async function hashTreeFiles(tree: FileTree, exclude: ReadonlySet<string>): Promise<FileDigest[]> {
  const out: FileDigest[] = [];
  for (const [path] of tree.walk()) {
    if (exclude.has(path)) continue;
    const e = tree.resolve(path);
    if (e?.type !== 'file') continue;
    const h1 = createHash('sha1');
    const h256 = createHash('sha256');
    for await (const c of e.content.stream()) {
      h1.update(c);
      h256.update(c);
    }
    out.push({ path, sha1: h1.digest('hex'), sha256: h256.digest('hex') });
  }
  return out.sort((a, b) => compareBytes(a.path, b.path));
}

/** SPDX 2.3 §7.9: SHA-1 over the sorted, concatenated SHA-1s of the package's files. */
export function packageVerificationCode(sha1s: readonly string[]): string {
  return createHash('sha1').update([...sha1s].sort().join('')).digest('hex');
}

export function makeSbom(p: SbomParams, files: readonly FileDigest[]): SpdxDocument {
  const sources = [...p.sources].sort((a, b) => compareBytes(`${a.kind}\0${a.name}\0${a.version ?? ''}\0${a.sha256 ?? ''}`, `${b.kind}\0${b.name}\0${b.version ?? ''}\0${b.sha256 ?? ''}`));
  const inputs = sources.map((s, i) => inputPackage(s, i + 1));
  const spdxFiles: SpdxFile[] = files.map((f, i) => ({
    SPDXID: `SPDXRef-File-${i + 1}`,
    fileName: `./${f.path}`,
    checksums: [
      { algorithm: 'SHA1', checksumValue: f.sha1 },
      { algorithm: 'SHA256', checksumValue: f.sha256 },
    ],
    licenseConcluded: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
  }));
  const image: SpdxPackage = {
    SPDXID: IMAGE_SPDXID,
    name: p.name,
    versionInfo: p.version,
    downloadLocation: 'NOASSERTION',
    filesAnalyzed: true,
    packageVerificationCode: {
      packageVerificationCodeValue: packageVerificationCode(files.map((f) => f.sha1)),
      packageVerificationCodeExcludedFiles: [`./${SBOM_ROOTFS_PATH}`],
    },
    sourceInfo: `root filesystem (${p.arch}) built by ossify ${p.builderVersion} from profile ${p.profileDigest}`,
    primaryPackagePurpose: 'OPERATING_SYSTEM',
    licenseConcluded: 'NOASSERTION',
    licenseDeclared: 'NOASSERTION',
    copyrightText: 'NOASSERTION',
  };
  // Unique per profile and epoch (a rebuild of the same release names the same document), never random.
  const ns = sha256Hex(`${p.profileDigest}\n${p.epoch}`);
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `${p.name}-${p.version}`,
    documentNamespace: `https://spdx.org/spdxdocs/ossify/${encodeURIComponent(p.name)}-${encodeURIComponent(p.version)}-${ns}`,
    creationInfo: { created: rfc3339(p.epoch), creators: [`Tool: ossify-${p.builderVersion}`] },
    packages: [image, ...inputs],
    files: spdxFiles,
    relationships: [
      { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: IMAGE_SPDXID },
      ...spdxFiles.map((f) => ({ spdxElementId: IMAGE_SPDXID, relationshipType: 'CONTAINS', relatedSpdxElement: f.SPDXID })),
      ...inputs.map((i) => ({ spdxElementId: IMAGE_SPDXID, relationshipType: 'GENERATED_FROM', relatedSpdxElement: i.SPDXID })),
    ],
  };
}

export function encodeSbom(doc: SpdxDocument): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(doc, null, 2)}\n`);
}

/**
 * Describes the rootfs in an SBOM and places the SBOM at /usr/share/ossify/sbom.spdx.json
 * (after hashing, so it does not describe itself). Returns the document's bytes, which are
 * also written beside the outputs.
 */
export async function addSbomToRootfs(tree: FileTree, p: SbomParams): Promise<Uint8Array> {
  const files = await hashTreeFiles(tree, new Set([SBOM_ROOTFS_PATH]));
  const bytes = encodeSbom(makeSbom(p, files));
  // Each level by hand: ensureDir would give missing parents mtime 0, not the epoch the rest of the tree has.
  const dirMeta = { mode: 0o755, uid: 0, gid: 0, mtime: p.epoch };
  for (const d of ['usr', 'usr/share', 'usr/share/ossify']) tree.ensureDir(d, dirMeta);
  tree.set(SBOM_ROOTFS_PATH, { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: p.epoch, content: bytesContent(bytes, 'sbom') });
  return bytes;
}
