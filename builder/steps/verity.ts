import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { computeVerity, slotHashOffset } from '../formats/verity.ts';
import { parseSize } from '../profile/schema.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { InputError } from '../util/errors.ts';
import { ROOTFS, ROOTFS_VERITY } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

/** verified boot: the dm-verity hash tree of the squashfs, as it goes after it in a root slot. */
export const verity = defineStep({
  name: 'verity',
  version: 1,
  applies: (p) => p.rootfs.verity === true,
  reads: ['rootfs.verity', 'disk.root'],
  needs: [],
  readsFiles: [ROOTFS],
  makes: ['verity'],
  writes: [ROOTFS_VERITY],
  async run(_, env) {
    const squashfs = join(env.work, ROOTFS);
    const size = (await stat(squashfs)).size;
    const v = await computeVerity(squashfs, { hashOffset: slotHashOffset(size) });
    const slot = parseSize(env.profile.disk.root);
    if (v.hashOffset + v.tree.length > slot) {
      throw new InputError(`the rootfs and its dm-verity tree (${v.hashOffset + v.tree.length} bytes) do not fit a root slot (${slot} bytes)`, { hint: 'raise disk.root in the profile' });
    }
    await writeFileAtomic(join(env.work, ROOTFS_VERITY), v.tree);
    env.log(`root hash ${v.rootHash}, ${v.dataBlocks} blocks, tree ${v.tree.length} bytes at ${v.hashOffset}`);
    return { verity: v };
  },
});
