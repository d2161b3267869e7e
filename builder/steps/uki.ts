import { join } from 'node:path';
import { kernelCmdline, ukiOsRelease, SLOTS } from '../boot/entries.ts';
import { signWithDb } from '../boot/secureboot/profile.ts';
import { buildUki } from '../boot/uki.ts';
import { readContent } from '../tree/content.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { InputError } from '../util/errors.ts';
import { slotVerity } from './shared.ts';
import { ukiArtifact } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

/** verified boot: one unified kernel image per slot (the command line names the slot), signed for Secure Boot. */
export const uki = defineStep({
  name: 'uki',
  version: 1,
  applies: (p) => p.boot.entries === 'uki',
  reads: ['arch', 'name', 'version', 'kernel.cmdline', 'boot', 'rootfs.verity', '$baseDigest', '$epoch'],
  needs: ['stub', 'vmlinuz', 'kernelVersion', 'initramfs', 'secureBoot'],
  mayUse: ['verity'],
  makes: [],
  writes: SLOTS.map(ukiArtifact),
  async run({ stub, vmlinuz, kernelVersion, initramfs, secureBoot, verity }, env) {
    const p = env.profile;
    // boot inputs takes systemd-stub whenever boot.entries is uki, as this step applies.
    if (!stub) throw new InputError('boot.systemdBoot: no systemd-stub was taken from it (boot.entries: uki)');
    const stubBytes = await readContent(stub);
    const kernel = await readContent(vmlinuz);
    const v = slotVerity(verity);
    for (const slot of SLOTS) {
      let image = buildUki({
        stub: stubBytes,
        kernel,
        initrd: initramfs,
        cmdline: kernelCmdline(slot, p.kernel.cmdline, v),
        osRelease: ukiOsRelease({ name: p.name, version: p.version, slot }),
        uname: kernelVersion,
      });
      if (secureBoot) image = await signWithDb(image, secureBoot, p.boot.secureBoot?.signer);
      await writeFileAtomic(join(env.work, ukiArtifact(slot)), image);
      env.log(`${ukiArtifact(slot)}: ${image.length} bytes${secureBoot ? ', signed' : ''}`);
    }
    return {};
  },
});
