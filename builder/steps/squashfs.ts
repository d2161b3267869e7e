import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSquashfs } from '../formats/squashfs/index.ts';
import { parseSize } from '../profile/schema.ts';
import { InputError } from '../util/errors.ts';
import { ROOTFS } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

/** The rootfs as a squashfs image, checked against the root slot's size. */
export const squashfs = defineStep({
  name: 'squashfs',
  version: 1,
  reads: ['rootfs.squashfs', 'disk.root', '$epoch'],
  needs: ['rootfs'],
  makes: [],
  writes: [ROOTFS],
  async run({ rootfs }, env) {
    const { squashfs: s } = env.profile.rootfs;
    const out = join(env.work, ROOTFS);
    const opts: Parameters<typeof writeSquashfs>[2] = { compression: s.compression, blockSize: s.blockSize, mkfsTime: env.loaded.epoch };
    if (s.level !== undefined) opts.level = s.level;
    await writeSquashfs(rootfs, out, opts);
    const size = (await stat(out)).size;
    const slot = parseSize(env.profile.disk.root);
    if (size > slot) {
      throw new InputError(`the rootfs (${size} bytes) is larger than a root slot (${slot} bytes)`, { hint: 'raise disk.root in the profile' });
    }
    env.log(`${size} bytes`);
    return {};
  },
});
