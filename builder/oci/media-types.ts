import { findArch } from '../arch.ts';

/** Media types and annotation keys of the OCI image and distribution specs (and Docker's v2 twins, for reading). */

export const MT = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerTar: 'application/vnd.oci.image.layer.v1.tar',
  layerTarGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  layerTarZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

/** What a pull asks for: every manifest kind we can read, ours first. */
export const MANIFEST_ACCEPT = [MT.manifest, MT.index, MT.dockerManifest, MT.dockerManifestList].join(', ');

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt === MT.index || mt === MT.dockerManifestList;
}

export function isManifestMediaType(mt: string | undefined): boolean {
  return mt === MT.manifest || mt === MT.dockerManifest;
}

export const ANNOTATION = {
  version: 'org.opencontainers.image.version',
  created: 'org.opencontainers.image.created',
  source: 'org.opencontainers.image.source',
  revision: 'org.opencontainers.image.revision',
  title: 'org.opencontainers.image.title',
  refName: 'org.opencontainers.image.ref.name',
  /** Which of the installer image's layers a descriptor is: `base` (busybox + script) or `payload`. */
  ossifyLayer: 'dev.ossify.layer',
  /** On the installer manifest: release.json's text, readable before any payload byte is fetched. */
  ossifyRelease: 'dev.ossify.release',
  /** On a layout's index.json: digest of the build.json the layout was made from (timings excluded). */
  ossifyBuild: 'dev.ossify.build-digest',
  /** On a layout's index.json: digest of every input of the image, so an unchanged rebuild is skipped. */
  ossifyInputs: 'dev.ossify.input-digest',
} as const;

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

/** The OCI platform of an architecture (any spelling, see builder/arch.ts). */
export function platformForArch(arch: string): Platform | undefined {
  const a = findArch(arch);
  return a ? { architecture: a.oci.architecture, os: 'linux', ...(a.oci.variant ? { variant: a.oci.variant } : {}) } : undefined;
}

/** The OCI architecture of the machine running ossify, for choosing from an index. */
export function hostOciArch(): string {
  return findArch(process.arch)?.oci.architecture ?? process.arch;
}
