import { z } from 'zod';
import type { PathSegment } from './errors.ts';

/**
 * Reads the zod schema by key path, for what zod's issues leave out: the keys allowed where
 * an unknown one was found (to suggest the closest), a field's description (to say what
 * belongs there), and which key tells the members of an input union apart.
 */
type Schema = z.core.$ZodType;

interface Def {
  type: string;
  innerType?: Schema;
  in?: Schema;
  shape?: Record<string, Schema>;
  element?: Schema;
  options?: Schema[];
  getter?: () => Schema;
}

const def = (s: Schema): Def => s._zod.def as unknown as Def;

const WRAPPERS = new Set(['optional', 'default', 'prefault', 'nullable', 'nonoptional', 'readonly', 'catch']);

/** Strips wrappers (optional, default, …), collecting the outermost description on the way. */
function unwrap(s: Schema): { schema: Schema; description?: string } {
  let description: string | undefined;
  let cur = s;
  for (;;) {
    description ??= z.globalRegistry.get(cur)?.description;
    const d = def(cur);
    if (WRAPPERS.has(d.type) && d.innerType) cur = d.innerType;
    else if (d.type === 'pipe' && d.in) cur = d.in;
    else if (d.type === 'lazy' && d.getter) cur = d.getter();
    else break;
  }
  return description === undefined ? { schema: cur } : { schema: cur, description };
}

/** Union members, flattened, so a path can step into whichever member has the key. */
function members(s: Schema): Schema[] {
  const u = unwrap(s).schema;
  const d = def(u);
  return d.type === 'union' && d.options ? d.options.flatMap(members) : [u];
}

function step(s: Schema, seg: PathSegment): Schema[] {
  const out: Schema[] = [];
  for (const m of members(s)) {
    const d = def(m);
    if (d.type === 'object' && d.shape && typeof seg === 'string' && Object.hasOwn(d.shape, seg)) out.push(d.shape[seg]!);
    else if (d.type === 'array' && d.element && typeof seg === 'number') out.push(d.element);
  }
  return out;
}

/** The (still wrapped) schemas that could apply at `path`. */
export function schemasAt(root: Schema, path: readonly PathSegment[]): Schema[] {
  let cur = [root];
  for (const seg of path) cur = cur.flatMap((s) => step(s, seg));
  return cur;
}

export function descriptionAt(root: Schema, path: readonly PathSegment[]): string | undefined {
  for (const s of schemasAt(root, path)) {
    const d = unwrap(s).description;
    if (d !== undefined) return d;
  }
  return undefined;
}

/** Keys a mapping at `path` may have (the union of all members' keys for an input). */
export function allowedKeysAt(root: Schema, path: readonly PathSegment[]): string[] {
  const keys = new Set<string>();
  for (const s of schemasAt(root, path)) {
    for (const m of members(s)) {
      const d = def(m);
      if (d.type === 'object' && d.shape) for (const k of Object.keys(d.shape)) keys.add(k);
    }
  }
  return [...keys];
}

export interface ObjectUnion {
  /** Each member's keys, in member order. */
  members: { keys: Set<string> }[];
  /** Each required key only one member has, mapped to that member's index (deb → 0, dir → 1, tar → 2). */
  discriminators: Map<string, number>;
}

/** The union of mappings at `path` (an input), or undefined when there is none. */
export function objectUnionAt(root: Schema, path: readonly PathSegment[]): ObjectUnion | undefined {
  for (const s of schemasAt(root, path)) {
    const d = def(unwrap(s).schema);
    if (d.type !== 'union' || !d.options) continue;
    const shapes = d.options.map((o) => {
      const od = def(unwrap(o).schema);
      return od.type === 'object' && od.shape ? od.shape : undefined;
    });
    if (shapes.some((sh) => sh === undefined)) continue;
    const discriminators = new Map<string, number>();
    shapes.forEach((sh, i) => {
      for (const [k, v] of Object.entries(sh!)) {
        const required = v._zod.optin === undefined;
        if (required && shapes.every((other, j) => j === i || !Object.hasOwn(other!, k))) discriminators.set(k, i);
      }
    });
    if (discriminators.size > 0) return { members: shapes.map((sh) => ({ keys: new Set(Object.keys(sh!)) })), discriminators };
  }
  return undefined;
}
