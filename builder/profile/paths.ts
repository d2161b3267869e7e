import type { PathSegment } from './errors.ts';
import type { Input, Profile, Program, SiteSettings } from './schema.ts';
import { inputKind, type PathRewrite } from '../inputs/kinds.ts';

type Rewrite = PathRewrite;

function mapInput(input: Input, path: PathSegment[], fn: Rewrite): Input {
  return inputKind(input).mapPaths(input, path, fn);
}

function mapPrograms(programs: Program[] | undefined, path: PathSegment[], fn: Rewrite): { programs?: Program[] } {
  if (programs === undefined) return {};
  return { programs: programs.map((p, i) => ({ ...p, from: mapInput(p.from, [...path, i, 'from'], fn) })) };
}

/**
 * A copy of `profile` with every local path (dir:, tar:, a deb: that is a file, an OCI
 * caFile, a files: source, the Secure Boot key directory) passed through `fn`, which also gets the key path so the caller
 * can find the file that declared it.
 */
export function mapLocalPaths(profile: Profile, fn: Rewrite): Profile {
  return {
    ...profile,
    kernel: { ...profile.kernel, input: mapInput(profile.kernel.input, ['kernel', 'input'], fn) },
    initramfs: {
      ...profile.initramfs,
      busybox: mapInput(profile.initramfs.busybox, ['initramfs', 'busybox'], fn),
      ...mapPrograms(profile.initramfs.programs, ['initramfs', 'programs'], fn),
    },
    rootfs: {
      ...profile.rootfs,
      inputs: profile.rootfs.inputs.map((inp, i) => mapInput(inp, ['rootfs', 'inputs', i], fn)),
      ...mapPrograms(profile.rootfs.programs, ['rootfs', 'programs'], fn),
    },
    boot: {
      ...profile.boot,
      systemdBoot: mapInput(profile.boot.systemdBoot, ['boot', 'systemdBoot'], fn),
      ...(profile.boot.secureBoot ? { secureBoot: { ...profile.boot.secureBoot, keys: fn(profile.boot.secureBoot.keys, ['boot', 'secureBoot', 'keys']) } } : {}),
    },
    ...(profile.site ? { site: mapSite(profile.site, fn) } : {}),
  };
}

/** fleet: the site's overlay directory and the files its certificates and files: entries copy. */
function mapSite(site: SiteSettings, fn: Rewrite): SiteSettings {
  return {
    ...site,
    ...(site.overlay !== undefined ? { overlay: fn(site.overlay, ['site', 'overlay']) } : {}),
    ...(site.certificates ? { certificates: site.certificates.map((c, i) => ('source' in c ? { ...c, source: fn(c.source, ['site', 'certificates', i, 'source']) } : c)) } : {}),
    ...(site.files ? { files: site.files.map((f, i) => ('source' in f ? { ...f, source: fn(f.source, ['site', 'files', i, 'source']) } : f)) } : {}),
  };
}
