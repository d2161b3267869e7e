import { loadKernel } from '../kernel/index.ts';
import { checkArch } from './shared.ts';
import { defineStep } from './step.ts';

/** The kernel input: its unpacked tree (for the modules), its version and the kernel image. */
export const kernelInput = defineStep({
  name: 'kernel input',
  version: 1,
  reads: ['arch', 'kernel.input'],
  needs: [],
  makes: ['kernelTree', 'kernelVersion', 'vmlinuz'],
  heavy: ['kernelTree'],
  fetches: true,
  async run(_, env) {
    const { tree, kernel: k } = await loadKernel(await env.fetch(env.profile.kernel.input), 'kernel.input');
    await checkArch(env.profile.arch, k.vmlinuz, `kernel.input: ${k.vmlinuzPath}`, 'use a kernel package of that architecture (e.g. linux-image-cloud-arm64 for aarch64)');
    env.log(`kernel ${k.version}`);
    return { kernelTree: tree, kernelVersion: k.version, vmlinuz: k.vmlinuz };
  },
});
