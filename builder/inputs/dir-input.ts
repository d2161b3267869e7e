import { basename } from 'node:path';
import type { DirInput } from '../profile/schema.ts';
import type { z } from 'zod';
import { treeFromDir } from './dir.ts';
import type { InputKind } from './kind.ts';

/** `dir:`: a directory of the checkout; not pinned, its content is its identity. */
export const dirKind: InputKind<z.infer<typeof DirInput>> = {
  origin: (input) => `dir:${input.dir}`,
  async load(input, ctx, origin) {
    const tree = await treeFromDir(input.dir, { origin, ...(ctx.log ? { log: ctx.log } : {}) });
    return { tree, sources: [{ kind: 'dir', name: basename(input.dir) }] };
  },
  mapPaths: (input, at, fn) => ({ ...input, dir: fn(input.dir, [...at, 'dir']) }),
};
