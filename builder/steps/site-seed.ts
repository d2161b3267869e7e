import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PlacedPartition } from '../disk/assemble.ts';
import { writeSiteSeed } from '../site/data.ts';
import { mergeExtents } from '../util/extents.ts';
import { DISK, SITE_SEED } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

const stateOffset = (partitions: PlacedPartition[]) => partitions.find((p) => p.label === 'STATE')?.offset;

/** fleet: the site's tar written at the start of the STATE partition of the disk. */
export const siteSeed = defineStep({
  name: 'site seed',
  version: 1,
  applies: (p) => p.site !== undefined,
  reads: [],
  needs: ['partitions', 'diskExtents'],
  readsFiles: [SITE_SEED, DISK],
  makes: ['diskExtents'],
  writes: [DISK],
  // Only STATE changes: the cache hashes the disk before it once, for every site of a base.
  rewritesFrom: ({ partitions }) => stateOffset(partitions),
  async run({ partitions, diskExtents }, env) {
    const seed = await readFile(join(env.work, SITE_SEED));
    await writeSiteSeed(join(env.work, DISK), partitions, seed);
    const state = stateOffset(partitions);
    env.log('seeded the STATE partition');
    return { diskExtents: state === undefined ? diskExtents : mergeExtents([...diskExtents, { offset: state, length: seed.length }]) };
  },
});
