import type { PathSegment } from './errors.ts';
import type { LNode } from './yaml-positions.ts';

/**
 * Decides, for two mappings at the same path, whether the child's replaces the parent's
 * instead of merging into it. Used where merging could only produce nonsense, e.g. a parent's
 * `{deb: …}` input and a child's `{dir: …}` would merge into an input that is both.
 */
export type ReplacePolicy = (path: readonly PathSegment[], parent: LNode, child: LNode) => boolean;

/**
 * `extends` semantics: mappings merge key by key, recursively; anything else in the child
 * (a list, a scalar, a null) replaces the parent's value whole. Lists replace rather than
 * append so a child can always say exactly what it wants, including fewer items.
 * Every node keeps the position it came from; a merged mapping takes the child's position,
 * since that is where a user adds a key that is missing from the result.
 */
export function mergeNodes(parent: LNode, child: LNode, replace: ReplacePolicy = () => false, path: PathSegment[] = []): LNode {
  if (parent.kind !== 'map' || child.kind !== 'map' || replace(path, parent, child)) return child;
  const entries = new Map(parent.entries);
  for (const [key, value] of child.entries) {
    const inherited = entries.get(key);
    entries.set(key, inherited === undefined ? value : mergeNodes(inherited, value, replace, [...path, key]));
  }
  const merged: LNode = { kind: 'map', pos: child.pos, entries };
  if (child.keyPos) merged.keyPos = child.keyPos;
  return merged;
}
