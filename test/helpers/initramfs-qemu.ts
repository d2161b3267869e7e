import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { readContent, type Content } from '../../builder/tree/content.ts';
import { loadInput } from '../../builder/inputs/index.ts';
import { findKernel, resolveModules, type ModulePlan } from '../../builder/kernel/index.ts';
import type { Input } from '../../builder/profile/schema.ts';

/** Shared with the other input tests: packages are downloaded once per checkout. */
export const TEST_CACHE = fileURLToPath(new URL('../../out/test-cache', import.meta.url));

export interface BootKit {
  /** The kernel image, written to `<work>/vmlinuz`. */
  vmlinuz: string;
  kernelVersion: string;
  plan: ModulePlan;
  busybox: Content;
}

/** Debian's cloud kernel (vmlinuz written into `work`), its closure of `modules`, and a static busybox. */
export async function loadBootKit(work: string, modules: string[]): Promise<BootKit> {
  const k = await loadInput({ deb: 'linux-image-cloud-amd64', depends: ['linux-image-*'] } as Input, { cacheDir: TEST_CACHE });
  const kernel = findKernel(k.tree);
  const vmlinuz = join(work, 'vmlinuz');
  await writeFile(vmlinuz, await readContent(kernel.vmlinuz));
  const plan = await resolveModules(k.tree, kernel.version, modules);
  const bb = await loadInput({ deb: 'busybox-static', depends: false } as Input, { cacheDir: TEST_CACHE });
  const busybox = bb.tree.resolve('bin/busybox');
  if (busybox?.type !== 'file') throw new Error('no busybox');
  return { vmlinuz, kernelVersion: kernel.version, plan, busybox: busybox.content };
}

/**
 * Boots `vmlinuz` with `initrd` directly under QEMU (TCG, no firmware, serial on stdio,
 * -no-reboot so a reboot ends the run), optionally with `disk` as a snapshot virtio disk;
 * returns the console log.
 */
export async function bootInitramfs(o: { vmlinuz: string; initrd: string; append: string; disk?: string; timeoutSeconds: number }): Promise<string> {
  const args = [
    '-accel', 'tcg', '-m', '512', '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none',
    '-serial', 'stdio', '-no-reboot',
    '-kernel', o.vmlinuz, '-initrd', o.initrd, '-append', `console=ttyS0 ${o.append}`,
    ...(o.disk ? ['-drive', `file=${o.disk},if=virtio,format=raw,snapshot=on`] : []),
  ];
  const r = await execa('qemu-system-x86_64', args, { timeout: o.timeoutSeconds * 1000, reject: false, all: true, stdin: 'ignore' });
  if (r.timedOut) throw new Error(`QEMU did not exit (no reboot/poweroff) within ${o.timeoutSeconds} s:\n${r.all}`);
  return r.all ?? '';
}

/** Lines the initramfs printed, without the kernel's timestamp prefix. */
export function initramfsLines(log: string): string[] {
  return log
    .split(/\r?\n/)
    .map((l) => l.replace(/^\[\s*\d+\.\d+\]\s*/, ''))
    .filter((l) => l.startsWith('ossify-initramfs:'));
}
