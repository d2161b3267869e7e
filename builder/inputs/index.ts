import { basename } from 'node:path';
import type { Input } from '../profile/schema.ts';
import { debOrigin, loadDebInput } from './deb-input.ts';
import { treeFromDir } from './dir.ts';
import { loadFilesInput } from './files-input.ts';
import { applyFilters } from './filter.ts';
import { loadOciInput } from './oci-input.ts';
import { applyAllow, describePolicy } from './policy.ts';
import { loadTarInput } from './tar-input.ts';
import type { InputContext, LoadedInput } from './types.ts';

export type { InputContext, InputLock, LoadedInput, SourceRecord } from './types.ts';

/** How errors and log lines name an input: its kind and what it points at. */
export function inputOrigin(input: Input): string {
  if ('deb' in input) return debOrigin(input);
  if ('dir' in input) return `dir:${input.dir}`;
  if ('tar' in input) return `tar:${input.tar}`;
  if ('oci' in input) return `oci:${input.oci}`;
  return `files:[${input.files.map((f) => f.path).join(', ')}]`;
}

async function loadKind(input: Input, ctx: InputContext, origin: string): Promise<LoadedInput> {
  if ('deb' in input) return loadDebInput(input, ctx);
  if ('dir' in input) {
    const tree = await treeFromDir(input.dir, { origin, ...(ctx.log ? { log: ctx.log } : {}) });
    return { tree, sources: [{ kind: 'dir', name: basename(input.dir) }] };
  }
  if ('tar' in input) return loadTarInput(input, ctx);
  if ('oci' in input) return loadOciInput(input, ctx);
  return loadFilesInput(input, origin);
}

/**
 * Turns one profile input into a file tree. Local paths arrive absolute (the profile
 * loader resolved them). After unpacking, the same steps apply to every kind: what the
 * input may carry (`allow`), then include/exclude, then the `target` directory.
 */
export async function loadInput(input: Input, ctx: InputContext): Promise<LoadedInput> {
  const origin = inputOrigin(input);
  const loaded = await loadKind(input, ctx, origin);
  const { tree, report } = applyAllow(loaded.tree, input.allow);
  for (const line of describePolicy(origin, report)) ctx.log?.(line);
  return { ...loaded, tree: applyFilters(tree, input, origin) };
}
