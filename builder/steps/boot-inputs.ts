import { efiNames } from '../arch.ts';
import { SYSTEMD_EFI_DIR } from '../boot/esp.ts';
import { loadSecureBootKeys } from '../boot/secureboot/profile.ts';
import { compressBaseLayerAhead } from '../release/base-layer.ts';
import { checkArch, requireFile } from './shared.ts';
import { defineStep } from './step.ts';

/** The busybox of the initramfs, systemd-boot (and systemd-stub for UKIs), the Secure Boot keys. */
export const bootInputs = defineStep({
  name: 'boot inputs',
  version: 1,
  reads: ['arch', 'initramfs.busybox', 'boot'],
  needs: [],
  makes: ['busybox', 'systemdBoot', 'stub', 'secureBoot'],
  heavy: ['secureBoot'],
  fetches: true,
  async run(_, env) {
    const p = env.profile;
    const busybox = requireFile(await env.fetch(p.initramfs.busybox), 'bin/busybox', 'initramfs.busybox');
    await checkArch(p.arch, busybox, 'initramfs.busybox: bin/busybox', 'use a static busybox of that architecture (deb: busybox-static is fetched for it)');
    // Not an output of the step: the installer image's base layer, compressed on a worker meanwhile (same bytes either way).
    compressBaseLayerAhead(busybox, env.loaded.epoch).catch(() => {});
    const bootTree = await env.fetch(p.boot.systemdBoot);
    const efi = efiNames(p.arch);
    const systemdBoot = requireFile(bootTree, `${SYSTEMD_EFI_DIR}/${efi.systemdBoot}`, 'boot.systemdBoot');
    await checkArch(p.arch, systemdBoot, `boot.systemdBoot: ${efi.systemdBoot}`, 'use systemd-boot-efi of that architecture');
    // verified boot: systemd-stub ships in the same package as systemd-boot.
    const stub = p.boot.entries === 'uki' ? requireFile(bootTree, `${SYSTEMD_EFI_DIR}/${efi.stub}`, 'boot.systemdBoot (for boot.entries: uki)') : null;
    const secureBoot = p.boot.secureBoot ? await loadSecureBootKeys(p.boot.secureBoot.keys) : null;
    return { busybox, systemdBoot, stub, secureBoot };
  },
});
