import type { Input } from '../profile/schema.ts';
import { applyFilters } from './filter.ts';
import { inputKind, inputOrigin } from './kinds.ts';
import { applyAllow, describePolicy } from './policy.ts';
import type { InputContext, LoadedInput } from './types.ts';

export type { InputContext, InputLock, LoadedInput, SourceRecord } from './types.ts';
export { INPUT_KINDS, inputKind, inputOrigin, pinKind, type InputKind, type InputKindName, type ResolutionContext } from './kinds.ts';

/**
 * Turns one profile input into a file tree. Local paths arrive absolute (the profile
 * loader resolved them). After unpacking, the same steps apply to every kind: what the
 * input may carry (`allow`), then include/exclude, then the `target` directory.
 */
export async function loadInput(input: Input, ctx: InputContext): Promise<LoadedInput> {
  const origin = inputOrigin(input);
  const loaded = await inputKind(input).load(input, ctx, origin);
  const { tree, report } = applyAllow(loaded.tree, input.allow);
  for (const line of describePolicy(origin, report)) ctx.log?.(line);
  return { ...loaded, tree: applyFilters(tree, input, origin) };
}
