import { join } from 'node:path';
import { readContent } from '../tree/content.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { KERNEL } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

/** The kernel image beside the other artifacts. */
export const kernel = defineStep({
  name: 'kernel',
  version: 1,
  reads: [],
  needs: ['vmlinuz'],
  makes: [],
  writes: [KERNEL],
  async run({ vmlinuz }, env) {
    await writeFileAtomic(join(env.work, KERNEL), await readContent(vmlinuz));
    return {};
  },
});
