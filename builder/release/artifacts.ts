import { BUILD_ARCHES, efiNames } from '../arch.ts';
import { SLOTS, type Slot } from '../boot/entries.ts';

/**
 * The names of a build's artifacts: the files `ossify build` writes beside build.json, which
 * build.json and release.json list with their sha256 and the installer image carries. Every
 * module that reads or writes one names it through these constants.
 */

/** The root filesystem image a slot holds. */
export const ROOTFS = 'rootfs.squashfs';
/** verified boot: the dm-verity superblock and hash tree, written at `hashOffset` of a root slot. */
export const ROOTFS_VERITY = 'rootfs.verity';
export const KERNEL = 'vmlinuz';
export const INITRAMFS = 'initramfs.img';
/** The whole GPT disk (the `raw` output format). */
export const DISK = 'disk.raw';
/** fleet: a site build's site data, the seed the installers write into STATE. */
export const SITE_SEED = 'site.tar';
/** The record of a build (builder/release/build-json.ts). */
export const BUILD_JSON = 'build.json';
/** What a release says about itself, in its installer image and on the ESP beside a slot's kernel. */
export const RELEASE_JSON = 'release.json';

/** A slot's unified kernel image: its command line names the slot, so each slot has its own. */
export const ukiArtifact = (slot: Slot): string => `uki-${slot}.efi`;
export const UKI_ARTIFACTS = SLOTS.map(ukiArtifact);

/**
 * The files every slot shares on the ESP, as build artifacts and installer payload files (so
 * a disk installed or upgraded from a registry image gets what the build's disk.raw has):
 * systemd-boot as the ESP holds it (signed with the db key under Secure Boot), loader.conf,
 * and the Secure Boot keys systemd-boot enrols, when the build has them. systemd-boot's name
 * carries the architecture (systemd-bootx64.efi, systemd-bootaa64.efi: builder/arch.ts).
 */
export const bootLoaderArtifact = (arch: string): string => efiNames(arch).systemdBoot;
export const BOOT_LOADER_ARTIFACTS = BUILD_ARCHES.map(bootLoaderArtifact);
export const LOADER_CONF_ARTIFACT = 'loader.conf';
export const AUTH_NAMES = ['PK', 'KEK', 'db'] as const;
export const authArtifact = (k: (typeof AUTH_NAMES)[number]): string => `${k}.auth`;
export const BOOT_ARTIFACTS = [...BOOT_LOADER_ARTIFACTS, LOADER_CONF_ARTIFACT, ...AUTH_NAMES.map(authArtifact)];

/** What every build writes, and every release needs (the disk stays with the build). */
export const PAYLOAD_REQUIRED = [ROOTFS, KERNEL, INITRAMFS] as const;
export const ARTIFACTS = [...PAYLOAD_REQUIRED, DISK] as const;

/**
 * Written when the profile asks for them, and then part of the release: the dm-verity tree,
 * the slots' unified kernel images (signed for Secure Boot when the profile says so), and the
 * ESP's shared boot files.
 */
export const OPTIONAL_ARTIFACTS = [ROOTFS_VERITY, ...UKI_ARTIFACTS, ...BOOT_ARTIFACTS] as const;
