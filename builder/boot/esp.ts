import { efiNames } from '../arch.ts';
import type { Content } from '../tree/content.ts';
import { bytesContent, textContent } from '../tree/content.ts';
import { FileTree } from '../tree/tree.ts';
import { AUTH_NAMES, authArtifact, bootLoaderArtifact, LOADER_CONF_ARTIFACT } from '../release/artifacts.ts';
import { entryConf, entryFileName, loaderConf, slotDir, UKI_DIR, ukiFileName, type EntrySpec } from './entries.ts';

/** Where systemd-boot 252 enrols Secure Boot keys from (`secure-boot-enroll`). */
export const SECURE_BOOT_KEYS_DIR = 'loader/keys/auto';

/** Where systemd-boot goes: the removable-media path the firmware starts, and systemd's own. */
export function bootLoaderPaths(arch: string): [string, string] {
  const n = efiNames(arch);
  return [n.removable, `EFI/systemd/${n.systemdBoot}`];
}
/** Where Debian's systemd-boot-efi installs systemd-boot and systemd-stub. */
export const SYSTEMD_EFI_DIR = 'usr/lib/systemd/boot/efi';
export const LOADER_CONF_PATH = 'loader/loader.conf';

export interface EspSpec {
  /** The architecture (uname -m): names systemd-boot's files. */
  arch: string;
  /** systemd-boot<efi suffix>.efi, signed when the image is for Secure Boot. */
  systemdBoot: Content;
  /** Slot A's entry (Type #1), or what names its UKI (generation, slot). */
  entry: EntrySpec;
  /** Type #1: the kernel and initramfs under ossify/a/. */
  kernel?: Content;
  initramfs?: Content;
  /** Type #2: slot A's unified kernel image (its command line is inside), EFI/Linux/ossify-<generation>-a.efi. */
  uki?: Content;
  timeout: number;
  epoch: number;
  /** loader/keys/auto/{PK,KEK,db}.auth and the loader.conf setting that enrols them. */
  secureBoot?: { enroll: 'force' | 'manual' | 'off'; auth?: Record<'PK' | 'KEK' | 'db', Uint8Array> };
}

/**
 * The ESP of a fresh image: systemd-boot as the removable-media loader (so no NVRAM boot
 * entry is needed), its config, and slot A's blessed entry: a Type #1 entry with the kernel
 * and initramfs under ossify/a/, or a unified kernel image in EFI/Linux/.
 */
export function buildEspTree(spec: EspSpec): FileTree {
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: spec.epoch };
  const dirMeta = { ...meta, mode: 0o755 };
  const t = new FileTree(dirMeta);
  const file = (path: string, content: Content) => {
    t.ensureDir(path.slice(0, path.lastIndexOf('/')), dirMeta);
    t.set(path, { type: 'file', ...meta, content });
  };
  const shared = espBootFiles(spec);
  for (const p of bootLoaderPaths(spec.arch)) file(p, shared[bootLoaderArtifact(spec.arch)]!);
  file(LOADER_CONF_PATH, shared[LOADER_CONF_ARTIFACT]!);
  for (const k of AUTH_NAMES) {
    const c = shared[authArtifact(k)];
    if (c) file(`${SECURE_BOOT_KEYS_DIR}/${authArtifact(k)}`, c);
  }
  const slot = spec.entry.slot;
  if (spec.uki) {
    file(`${UKI_DIR}/${ukiFileName(slot, spec.entry.generation)}`, spec.uki);
    t.ensureDir(slotDir(slot), dirMeta);
  } else {
    if (!spec.kernel || !spec.initramfs) throw new Error('buildEspTree: a Type #1 entry needs the kernel and the initramfs');
    file(`loader/entries/${entryFileName(slot)}`, textContent(entryConf(spec.entry)));
    file(`${slotDir(slot)}/vmlinuz`, spec.kernel);
    file(`${slotDir(slot)}/initrd.img`, spec.initramfs);
  }
  t.ensureDir(slotDir(slot === 'a' ? 'b' : 'a'), dirMeta);
  return t;
}

/** The shared boot files of an ESP by artifact name (BOOT_ARTIFACTS in builder/release/artifacts.ts); the keys only when systemd-boot is to enrol them. */
export function espBootFiles(spec: Pick<EspSpec, 'arch' | 'systemdBoot' | 'timeout' | 'secureBoot'>): Partial<Record<string, Content>> {
  const enroll = spec.secureBoot && spec.secureBoot.enroll !== 'off' && spec.secureBoot.auth ? spec.secureBoot.enroll : undefined;
  const out: Partial<Record<string, Content>> = {
    [bootLoaderArtifact(spec.arch)]: spec.systemdBoot,
    [LOADER_CONF_ARTIFACT]: textContent(loaderConf({ timeout: spec.timeout, ...(enroll ? { secureBootEnroll: enroll } : {}) })),
  };
  if (enroll) for (const k of AUTH_NAMES) out[authArtifact(k)] = bytesContent(spec.secureBoot!.auth![k], authArtifact(k));
  return out;
}
