import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { entryFileName } from '../boot/entries.ts';
import { SECURE_BOOT_KEYS_DIR, SYSTEMD_EFI_DIR } from '../boot/esp.ts';
import { efiNames } from '../arch.ts';
import { openFatEditor } from '../formats/fat/mutate.ts';
import { loadInput } from '../inputs/index.ts';
import { DebInput } from '../profile/schema.ts';
import { readContent } from '../tree/content.ts';
import { InputError } from '../util/errors.ts';
import { ENTRIES_DIR, extraCmdline, parseEntryConf } from './boot-state.ts';
import { enrolsKeys, releaseBootFiles } from './boot-files.ts';
import { openDisk, partitionIo } from './disk.ts';
import { probeLayout } from './layout.ts';
import type { ReleaseSource } from './release.ts';

/**
 * What a disk needs beyond the slot's files: systemd-boot, the Secure Boot keys it enrols,
 * the menu timeout and (Type #1) the kernel arguments from the release's profile. A release
 * made by this ossify carries the first three as payload files (builder/installer/boot-files.ts);
 * otherwise they come from (first match wins) the command line, the release source's own built
 * disk (a build output's disk.raw), the disk being upgraded, or — for systemd-boot only — the
 * same Debian package the build uses by default. The kernel arguments come only from
 * the command line, disk.raw or the disk being upgraded.
 */
export interface BootSettings {
  /** Kernel arguments besides the ones naming the slot. */
  cmdline: string | undefined;
  timeout: number | undefined;
  systemdBoot: Uint8Array | undefined;
  /** Secure Boot: the keys systemd-boot enrols (loader/keys/auto/*.auth) and loader.conf's secure-boot-enroll. */
  secureBoot?: { enroll: 'force' | 'manual' | 'off'; auth: Record<'PK' | 'KEK' | 'db', Uint8Array> } | undefined;
}

/** The release's own boot files (its payload or build artifacts), else what its build baked into disk.raw. */
export async function bootSettingsOfSource(src: ReleaseSource): Promise<BootSettings> {
  const built = await bootSettingsOfBuiltDisk(src);
  const rel = await releaseBootFiles(src);
  if (!rel) return built;
  return {
    cmdline: built.cmdline,
    timeout: rel.timeout ?? built.timeout,
    systemdBoot: rel.systemdBoot,
    ...(rel.auth && enrolsKeys(rel) ? { secureBoot: { enroll: rel.enroll!, auth: rel.auth } } : {}),
  };
}

/** Reads the settings a build baked into its disk.raw, if the source is a build output with one. */
async function bootSettingsOfBuiltDisk(src: ReleaseSource): Promise<BootSettings> {
  const none: BootSettings = { cmdline: undefined, timeout: undefined, systemdBoot: undefined };
  const diskPath = join(src.dir, 'disk.raw');
  if (!(await stat(diskPath).catch(() => undefined))?.isFile()) return none;
  const disk = await openDisk(diskPath, { write: false });
  try {
    const layout = await probeLayout(disk).catch(() => undefined);
    if (!layout) return none;
    const esp = await openFatEditor(partitionIo(disk, layout.esp));
    const read = async (path: string) => ((await esp.stat(path)) ? Buffer.from(await esp.readFile(path)) : undefined);
    const entry = await read(`${ENTRIES_DIR}/${entryFileName('a')}`);
    const loader = await read('loader/loader.conf');
    const conf = loader ? parseEntryConf(loader.toString('utf8')) : new Map<string, string>();
    const timeout = Number(conf.get('timeout') ?? NaN);
    // A Secure Boot build's ESP carries the signed systemd-boot (above) and the keys to enrol.
    const enroll = conf.get('secure-boot-enroll');
    const auth = { PK: await read(`${SECURE_BOOT_KEYS_DIR}/PK.auth`), KEK: await read(`${SECURE_BOOT_KEYS_DIR}/KEK.auth`), db: await read(`${SECURE_BOOT_KEYS_DIR}/db.auth`) };
    const secureBoot: BootSettings['secureBoot'] =
      (enroll === 'force' || enroll === 'manual' || enroll === 'off') && auth.PK && auth.KEK && auth.db ? { enroll, auth: { PK: auth.PK, KEK: auth.KEK, db: auth.db } } : undefined;
    return {
      cmdline: entry ? extraCmdline(parseEntryConf(entry.toString('utf8')).get('options')) : undefined,
      timeout: Number.isFinite(timeout) ? timeout : undefined,
      systemdBoot: await read(efiNames(layout.arch).removable),
      ...(secureBoot ? { secureBoot } : {}),
    };
  } finally {
    await disk.close();
  }
}

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
