import { readFile } from 'node:fs/promises';
import { SYSTEMD_EFI_DIR } from '../boot/esp.ts';
import type { ReleaseBoot } from '../boot/release-boot.ts';
import { efiNames } from '../arch.ts';
import { loadInput } from '../inputs/index.ts';
import { DebInput } from '../profile/schema.ts';
import { readContent } from '../tree/content.ts';
import { InputError } from '../util/errors.ts';
import { enrolsKeys, releaseBootFiles } from './boot-files.ts';
import type { ReleaseSource } from './release.ts';

/**
 * How a disk boots a release, as its build wrote disk.raw: the release's boot record
 * (release.json `boot`, builder/boot/release-boot.ts: entry kind, kernel arguments, menu
 * timeout, tries, Secure Boot enrolment) and its payload boot files (systemd-boot, loader.conf,
 * the Secure Boot keys: builder/installer/boot-files.ts). `install --from`, `install --image`,
 * `upgrade` and the on-device script all read these, so each writes what the build wrote.
 *
 * A release made before releases carried the record has `record` undefined: its kernel
 * arguments are unknown (install refuses a Type #1 one unless --cmdline names them; upgrade
 * keeps the running slot's), its tries default to 3 and its timeout comes from its
 * loader.conf, else 0. Command-line flags override every setting.
 */
export interface BootSettings {
  record: ReleaseBoot | undefined;
  /** Kernel arguments besides the ones naming the slot; undefined when the release records none. */
  cmdline: string | undefined;
  timeout: number | undefined;
  tries: number | undefined;
  systemdBoot: Uint8Array | undefined;
  /** Secure Boot: the keys systemd-boot enrols (loader/keys/auto/*.auth) and loader.conf's secure-boot-enroll. */
  secureBoot?: { enroll: 'force' | 'manual' | 'off'; auth: Record<'PK' | 'KEK' | 'db', Uint8Array> } | undefined;
}

/** The release's boot record and boot files, checked to agree with each other. */
export async function bootSettingsOfSource(src: ReleaseSource): Promise<BootSettings> {
  const record = src.release.boot;
  const rel = await releaseBootFiles(src);
  const what = `${src.release.name} ${src.release.version}`;
  if (record && rel) {
    // loader.conf is written from the record (builder/boot/esp.ts): a difference is a damaged or hand-made release.
    const enroll = record.secureBoot && record.secureBoot.enroll !== 'off' ? record.secureBoot.enroll : undefined;
    const disagree = rel.timeout !== record.timeout ? `timeout ${rel.timeout ?? 'none'} against ${record.timeout}` : rel.enroll !== enroll ? `secure-boot-enroll ${rel.enroll ?? 'none'} against ${enroll ?? 'none'}` : (rel.auth !== undefined) !== (enroll !== undefined) ? `${rel.auth ? 'keys to enrol' : 'no keys to enrol'} against secure-boot-enroll ${enroll ?? 'none'}` : undefined;
    if (disagree) throw new InputError(`${what}: its loader.conf and its boot record in release.json disagree (${disagree})`, { hint: 'rebuild the release with ossify build' });
  }
  return {
    record,
    cmdline: record?.cmdline,
    timeout: record?.timeout ?? rel?.timeout,
    tries: record?.tries,
    systemdBoot: rel?.systemdBoot,
    ...(rel?.auth && enrolsKeys(rel) ? { secureBoot: { enroll: rel.enroll!, auth: rel.auth } } : {}),
  };
}

/** What an install or upgrade says about a release without a boot record. */
export const NO_BOOT_RECORD = 'its release.json has no boot record (a release made by an older ossify)';

/** systemd-boot from a file the user names, or from Debian's systemd-boot-efi of the architecture through the input cache. */
export async function loadSystemdBoot(opts: { file?: string; arch: string; cacheDir: string; log?: (line: string) => void }): Promise<Uint8Array> {
  if (opts.file !== undefined) {
    try {
      return await readFile(opts.file);
    } catch (err) {
      throw new InputError(`cannot read --systemd-boot ${opts.file}`, { cause: err });
    }
  }
  const loaded = await loadInput(DebInput.parse({ deb: 'systemd-boot-efi' }), { cacheDir: opts.cacheDir, arch: opts.arch, ...(opts.log ? { log: opts.log } : {}) });
  const path = `${SYSTEMD_EFI_DIR}/${efiNames(opts.arch).systemdBoot}`;
  const e = loaded.tree.resolve(path);
  if (!e || e.type !== 'file') throw new InputError(`the systemd-boot-efi package has no ${path}`);
  return readContent(e.content);
}
