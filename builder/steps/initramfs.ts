import { join } from 'node:path';
import { programsTree } from '../elf/index.ts';
import { buildInitramfs, buildInitramfsTree } from '../initramfs/index.ts';
import { resolveModules } from '../kernel/index.ts';
import { hasProgram, type Profile } from '../profile/schema.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { InputError } from '../util/errors.ts';
import { INITRAMFS } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

/** The initramfs: busybox, the generated /init, the resolved kernel modules and any programs, compressed. */
export const initramfs = defineStep({
  name: 'initramfs',
  version: 1,
  reads: ['arch', 'kernel', 'initramfs', 'rootfs.verity', '$epoch'],
  needs: ['kernelTree', 'kernelVersion', 'busybox'],
  makes: ['initramfs'],
  writes: [INITRAMFS],
  fetches: true,
  async run({ kernelTree, kernelVersion, busybox }, env) {
    const p = env.profile;
    const plan = await resolveModules(kernelTree, kernelVersion, p.kernel.modules);
    if (p.rootfs.verity) checkVerityTools(p, plan); // verified boot
    const programs = p.initramfs.programs?.length ? (await programsTree(p.initramfs.programs, 'initramfs.programs', (i) => env.fetch(i))).tree : undefined;
    const tree = buildInitramfsTree({ busybox, modules: plan, kernelVersion, epoch: env.loaded.epoch, ...(programs ? { programs } : {}) });
    const bytes = await buildInitramfs(tree, p.initramfs.compression, p.initramfs.level);
    await writeFileAtomic(join(env.work, INITRAMFS), bytes);
    env.log(`${plan.modules.length} modules, ${bytes.length} bytes`);
    return { initramfs: bytes };
  },
});

/** A verity root needs dm-verity in the initramfs and a dmsetup to map it; say how to add either. */
function checkVerityTools(p: Profile, plan: Awaited<ReturnType<typeof resolveModules>>): void {
  if (!plan.modules.some((m) => m.name === 'dm_verity') && !plan.builtin.includes('dm_verity')) {
    throw new InputError('rootfs.verity is on, but kernel.modules does not load dm_verity', { hint: 'add dm_verity to kernel.modules (its dependencies dm_mod, dm_bufio, … are added automatically)' });
  }
  if (!hasProgram(p.initramfs.programs, 'dmsetup', 'veritysetup')) {
    throw new InputError('rootfs.verity is on, but the initramfs has no dmsetup to map the root', {
      hint: 'add to initramfs.programs:  - { path: sbin/dmsetup, from: { deb: dmsetup, depends: true } }',
    });
  }
}
