import type { z } from 'zod';
import { closest, formatPath, type PathSegment, type RawIssue } from './errors.ts';
import { allowedKeysAt, descriptionAt, objectUnionAt, type ObjectUnion } from './schema-walk.ts';
import { deepestAt, describeNode, nodeAt, type LNode } from './yaml-positions.ts';

type Issue = z.core.$ZodIssue;

/**
 * Turns zod's issues into messages about the YAML the user wrote: each located at the node
 * that supplied the value (the key, for an unknown key; the enclosing mapping, for a missing
 * one), phrased in YAML terms (mapping, list), with a hint on how to fix it.
 */
export function explainZodIssues(issues: readonly Issue[], root: LNode, schema: z.core.$ZodType): RawIssue[] {
  return new Explainer(root, schema).explain(issues, []);
}

const TYPE_NAMES: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  string: 'a string',
  number: 'a number',
  int: 'a whole number',
  boolean: 'true or false',
  null: 'null',
};

const q = (s: string) => JSON.stringify(s);

function scalarText(n: LNode | undefined): string {
  if (n === undefined || n.kind !== 'scalar') return '';
  return typeof n.value === 'string' ? q(n.value) : (n.source ?? String(n.value));
}

class Explainer {
  constructor(
    private readonly root: LNode,
    private readonly schema: z.core.$ZodType,
  ) {}

  explain(issues: readonly Issue[], base: PathSegment[]): RawIssue[] {
    const out: RawIssue[] = [];
    for (const issue of issues) {
      const path = [...base, ...(issue.path as PathSegment[])];
      // `.int()` adds its own safe-integer bound beside the schema's tighter one; report only the latter.
      const samePath = (o: Issue) => o !== issue && o.path.join('.') === issue.path.join('.');
      if (issue.code === 'too_big' && issue.origin === 'int' && issues.some((o) => samePath(o) && o.code === 'too_big')) continue;
      // A refinement (power of two) is noise next to a plain range violation of the same value.
      if (issue.code === 'custom' && issues.some((o) => samePath(o) && o.code !== 'custom')) continue;
      out.push(...this.one(issue, path));
    }
    return out;
  }

  private one(issue: Issue, path: PathSegment[]): RawIssue[] {
    const node = nodeAt(this.root, path);
    if (issue.code === 'unrecognized_keys') return issue.keys.map((k) => this.unknownKey([...path, k]));
    if (node === undefined) return [this.missing(path)];
    switch (issue.code) {
      case 'invalid_union':
        return this.union(issue, path, node);
      case 'invalid_type':
        return [this.wrongType(path, node, [issue.expected])];
      case 'invalid_value': {
        const allowed = issue.values.map((v) => String(v));
        const guess = closest(String(node.kind === 'scalar' ? node.value : ''), allowed);
        return [
          this.at(node, path, `invalid value ${scalarText(node) || describeNode(node)}`, `${formatPath(path)} must be one of: ${allowed.join(', ')}${guess === undefined ? '' : `; did you mean ${q(guess)}?`}`),
        ];
      }
      case 'invalid_format': {
        const custom = !/^Invalid\b/.test(issue.message);
        const hint = custom ? `${formatPath(path)} must be ${issue.message}` : (this.described(path) ?? `${formatPath(path)} must match ${issue.pattern ?? issue.format}`);
        return [this.at(node, path, `invalid value ${scalarText(node)}`, hint)];
      }
      case 'too_small':
      case 'too_big':
        return [this.bound(issue, path, node)];
      case 'custom':
        return [this.at(node, path, `invalid value ${scalarText(node) || describeNode(node)}`, `${formatPath(path)} must be ${issue.message}`)];
      default:
        return [this.at(node, path, issue.message, this.described(path) ?? `check the value of ${formatPath(path)}`)];
    }
  }

  private at(node: LNode, path: PathSegment[], message: string, hint?: string): RawIssue {
    const r: RawIssue = { pos: node.pos, path, message };
    if (hint !== undefined) r.hint = hint;
    return r;
  }

  /** "disk.root: A size in bytes, …" — what belongs at a path, from the schema's descriptions. */
  private described(path: PathSegment[]): string | undefined {
    const d = descriptionAt(this.schema, path);
    return d === undefined ? undefined : `${formatPath(path)}: ${d}`;
  }

  private missing(path: PathSegment[]): RawIssue {
    const parentPath = path.slice(0, -1);
    const { node: parent } = deepestAt(this.root, parentPath);
    const key = String(path[path.length - 1]);
    const where = parentPath.length > 0 ? `under ${formatPath(parentPath)}` : 'at the top level';
    const desc = descriptionAt(this.schema, path);
    const union = objectUnionAt(this.schema, path);
    const shape = union ? ` as a mapping with one of: ${[...union.discriminators.keys()].join(', ')}` : '';
    return { pos: parent.pos, path, message: `missing required key ${q(key)}`, hint: `add ${q(`${key}:`)} ${where}${shape}${desc === undefined ? '' : ` (${desc.replace(/\.$/, '')})`}` };
  }

  private unknownKey(path: PathSegment[]): RawIssue {
    const key = String(path[path.length - 1]);
    const parentPath = path.slice(0, -1);
    const node = nodeAt(this.root, path);
    const pos = node?.keyPos ?? node?.pos ?? deepestAt(this.root, parentPath).node.pos;
    const union = objectUnionAt(this.schema, parentPath);
    const parent = nodeAt(this.root, parentPath);
    if (union && parent?.kind === 'map' && union.members.some((m) => m.keys.has(key))) return this.misplacedUnionKey(union, parent, path, key, pos);
    const allowed = allowedKeysAt(this.schema, parentPath);
    const guess = closest(key, allowed);
    const hint =
      guess !== undefined
        ? `unknown key ${q(key)}; did you mean ${q(guess)}?`
        : `allowed keys ${parentPath.length > 0 ? `in ${formatPath(parentPath)}` : 'at the top level'}: ${allowed.join(', ')}`;
    return { pos, path, message: `unknown key ${q(key)}`, hint };
  }

  /** A key that belongs to another kind of input than the one this mapping is (e.g. `depends` on a dir). */
  private misplacedUnionKey(union: ObjectUnion, parent: LNode & { kind: 'map' }, path: PathSegment[], key: string, pos: RawIssue['pos']): RawIssue {
    const kinds = [...union.discriminators.keys()];
    const present = [...parent.entries.keys()].filter((k) => union.discriminators.has(k));
    if (union.discriminators.has(key) && present.length > 1) {
      return { pos, path, message: `conflicting keys ${present.map(q).join(' and ')}`, hint: `an input is one of: ${kinds.join(', ')}; keep exactly one of them in ${formatPath(path.slice(0, -1))}` };
    }
    const owners = kinds.filter((k) => union.members[union.discriminators.get(k)!]!.keys.has(key));
    const r: RawIssue = { pos, path, message: `key ${q(key)} does not apply ${present[0] === undefined ? 'here' : `to a ${present[0]} input`}` };
    r.hint = `${q(key)} applies only to ${owners.map((o) => `a ${o} input`).join(' or ')}; remove it from ${formatPath(path.slice(0, -1))}`;
    return r;
  }

  private union(issue: Issue & { code: 'invalid_union' }, path: PathSegment[], node: LNode): RawIssue[] {
    const union = objectUnionAt(this.schema, path);
    if (union && node.kind === 'map') {
      const present = [...node.entries.keys()].filter((k) => union.discriminators.has(k));
      const branches = [...new Set(present.map((k) => union.discriminators.get(k)!))];
      if (branches.length === 1) return this.explain(issue.errors[branches[0]!] ?? [], path);
      if (branches.length > 1) {
        const second = node.entries.get(present[1]!)!;
        return [
          {
            pos: second.keyPos ?? second.pos,
            path: [...path, present[1]!],
            message: `conflicting keys ${present.map(q).join(' and ')}`,
            hint: `an input is one of: ${[...union.discriminators.keys()].join(', ')}; keep exactly one of them in ${formatPath(path)}`,
          },
        ];
      }
      // No key says which kind of input this is: report strangers, and the missing kind unless a stranger is a typo of one.
      const all = new Set(union.members.flatMap((m) => [...m.keys]));
      const strangers = [...node.entries.keys()].filter((k) => !all.has(k));
      const out = strangers.map((k) => this.unknownKey([...path, k]));
      const kinds = [...union.discriminators.keys()];
      if (!strangers.some((k) => kinds.includes(closest(k, [...all]) ?? ''))) {
        out.push({ pos: node.pos, path, message: `missing one of ${kinds.map(q).join(', ')}`, hint: `say what kind of input ${formatPath(path)} is: add one of ${kinds.map((k) => `${k}:`).join(', ')}` });
      }
      return out;
    }
    // A union of types (a size is a number or a string): if the value has one of the types,
    // explain why that member rejected it; otherwise list the types.
    const typeOnly = (errs: readonly Issue[]) => errs.length > 0 && errs.every((e) => e.code === 'invalid_type' && e.path.length === 0);
    const candidates = issue.errors.filter((errs) => !typeOnly(errs));
    if (candidates.length === 0) {
      const expected = issue.errors.flatMap((errs) => errs.map((e) => (e.code === 'invalid_type' ? e.expected : '')));
      return [this.wrongType(path, node, expected)];
    }
    // A member that took the value's shape and rejected something inside it explains best (a mapping's bad setting, not "expected a name").
    const inside = candidates.filter((errs) => errs.every((e) => e.path.length > 0));
    const best = (inside.length ? inside : candidates).reduce((a, b) => (b.length < a.length ? b : a));
    return this.explain(best, path);
  }

  private wrongType(path: PathSegment[], node: LNode, expected: readonly string[]): RawIssue {
    const names = [...new Set(expected.filter((e) => e !== '').map((e) => TYPE_NAMES[e] ?? e))];
    const message = `expected ${names.join(' or ')}, got ${describeNode(node)}`;
    let hint: string | undefined;
    if (names.length === 1 && expected.includes('string') && node.kind === 'scalar' && node.value !== null && typeof node.value !== 'string') {
      // YAML reads 1.0 as a number and yes/true as a boolean; quoting is the usual fix.
      hint = `quote it to make it a string: ${String(path[path.length - 1])}: ${q(node.source ?? String(node.value))}`;
    } else if (expected.includes('object') && objectUnionAt(this.schema, path)) {
      const kinds = [...objectUnionAt(this.schema, path)!.discriminators.keys()];
      hint = `${formatPath(path)} is a mapping with one of: ${kinds.join(', ')} (e.g. {${kinds[0]}: …})`;
    } else {
      hint = this.described(path) ?? `${formatPath(path)} must be ${names.join(' or ')}`;
    }
    return this.at(node, path, message, hint);
  }

  private bound(issue: Issue & { code: 'too_small' | 'too_big' }, path: PathSegment[], node: LNode): RawIssue {
    const small = issue.code === 'too_small';
    const limit = Number(small ? (issue as { minimum: number | bigint }).minimum : (issue as { maximum: number | bigint }).maximum);
    if (issue.origin === 'array') {
      const count = node.kind === 'seq' ? node.items.length : 0;
      const hint = `${formatPath(path)} needs ${small ? 'at least' : 'at most'} ${limit} item${limit === 1 ? '' : 's'}`;
      const desc = descriptionAt(this.schema, path);
      return this.at(node, path, `${small ? 'too few' : 'too many'} items (${count})`, desc === undefined ? hint : `${hint}: ${desc}`);
    }
    if (issue.origin === 'string') {
      if (small && limit === 1) return this.at(node, path, 'empty string', `${formatPath(path)} must not be empty`);
      return this.at(node, path, `string too ${small ? 'short' : 'long'}`, `${formatPath(path)} must have ${small ? 'at least' : 'at most'} ${limit} characters`);
    }
    const bound = small ? (issue.inclusive ? 'at least' : 'greater than') : issue.inclusive ? 'at most' : 'less than';
    return this.at(node, path, `${scalarText(node) || describeNode(node)} is too ${small ? 'small' : 'large'}`, `${formatPath(path)} must be ${bound} ${limit}`);
  }
}
