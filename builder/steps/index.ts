import type { Profile } from '../profile/schema.ts';
import { bootInputs } from './boot-inputs.ts';
import { disk } from './disk.ts';
import { initramfs } from './initramfs.ts';
import { kernel } from './kernel.ts';
import { kernelInput } from './kernel-input.ts';
import { rootfsTree } from './rootfs-tree.ts';
import { sbom } from './sbom.ts';
import { siteSeed } from './site-seed.ts';
import { site } from './site.ts';
import { squashfs } from './squashfs.ts';
import type { Step } from './step.ts';
import { uki } from './uki.ts';
import { verity } from './verity.ts';

/**
 * The build, in order: each step reads only what earlier ones made, and decides from the
 * profile whether it applies. The installer image, provenance and image formats follow in
 * pipeline.ts, from the build directory these leave.
 */
export const STEPS: readonly Step[] = [
  kernelInput, //  1. the kernel input: kernel image, version, module tree
  bootInputs, //   2. busybox, systemd-boot (and -stub), Secure Boot keys
  initramfs, //    3. busybox + /init + modules → initramfs.img
  rootfsTree, //   4. the root file tree from the rootfs inputs
  sbom, //         5. the SBOM, into the tree and beside it
  squashfs, //     6. the tree → the root image (squashfs)
  verity, //       7. rootfs.verity (rootfs.verity: true)
  kernel, //       8. vmlinuz
  uki, //          9. a UKI per slot (boot.entries: uki)
  disk, //        10. disk.raw: ESP + ROOT-A + ROOT-B + STATE
  site, //        11. site.tar (site:)
  siteSeed, //    12. site.tar into STATE (site:)
];

/** The steps that apply to a profile, in order. */
export function stepsFor(p: Profile): Step[] {
  return STEPS.filter((s) => s.applies(p));
}
