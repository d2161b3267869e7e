import { LineCounter, isAlias, isMap, isPair, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import type { PathSegment, RawIssue, SourcePos } from './errors.ts';

/**
 * A YAML value that remembers where it was written. Profiles are merged across files
 * (`extends`) before validation, so every node carries its own file; a zod issue path can then
 * be traced back to the file, line and column that supplied the offending value.
 */
export type LNode = LMap | LSeq | LScalar;

interface LBase {
  /** Where the value starts (for an empty value: where its key is). */
  pos: SourcePos;
  /** Where its key is, when the value sits in a mapping. */
  keyPos?: SourcePos;
}

export interface LMap extends LBase {
  kind: 'map';
  entries: Map<string, LNode>;
}

export interface LSeq extends LBase {
  kind: 'seq';
  items: LNode[];
}

export interface LScalar extends LBase {
  kind: 'scalar';
  value: string | number | boolean | null | bigint;
  /** The text as written, to suggest quoting when YAML typed it as a number or boolean. */
  source?: string;
}

export interface ParsedYaml {
  root?: LNode;
  issues: RawIssue[];
}

/** Expanding aliases ourselves bypasses yaml's own guard, so the same limit is kept here. */
const MAX_ALIAS_EXPANSIONS = 100;

const YAML_HINTS: Record<string, string> = {
  DUPLICATE_KEY: 'each key may appear once per mapping; remove or merge the duplicate',
  MULTIPLE_DOCS: 'a profile is a single YAML document; remove the "---" separator and what follows, or move it to its own file',
  TAB_AS_INDENT: 'indent with spaces, not tabs',
  BAD_INDENT: 'check the indentation, and that every [ or { is closed before the next key',
  BLOCK_AS_IMPLICIT_KEY: 'put nested mappings on their own indented lines, or quote a value that contains ": "',
  MISSING_CHAR: 'close the bracket or quote that was opened',
  UNEXPECTED_TOKEN: 'quote values that contain YAML special characters (: # [ ] { } , & * !)',
};

export function parseLocatedYaml(text: string, file: string): ParsedYaml {
  const lc = new LineCounter();
  // prettyErrors adds a code frame to the message; the CLI shows file:line:column instead.
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, keepSourceTokens: false });
  const at = (offset: number): SourcePos => {
    const { line, col } = lc.linePos(offset);
    return { file, line, column: col };
  };
  const issues: RawIssue[] = doc.errors.map((e) => {
    // yaml's own wording for this one addresses programmers ("please use parseAllDocuments").
    const what = e.code === 'MULTIPLE_DOCS' ? 'more than one YAML document in the file' : e.message.replace(/\s+$/, '');
    const issue: RawIssue = { pos: at(e.pos[0]), path: [], message: `YAML syntax error: ${what}` };
    issue.hint = YAML_HINTS[e.code] ?? 'fix the YAML syntax; quote values that contain special characters';
    return issue;
  });
  if (issues.length > 0) return { issues };
  if (doc.contents === null) {
    return {
      issues: [{ pos: { file, line: 1, column: 1 }, path: [], message: 'the profile is empty', hint: 'a profile is a mapping; start with name:, version:, kernel:, initramfs: and rootfs:' }],
    };
  }
  const conv = new Converter(doc, at);
  const root = conv.convert(doc.contents, [], undefined);
  return { root, issues: conv.issues };
}

class Converter {
  readonly issues: RawIssue[] = [];
  private aliases = 0;
  private readonly expanding = new Set<unknown>();
  constructor(
    private readonly doc: Document,
    private readonly at: (offset: number) => SourcePos,
  ) {}

  convert(node: unknown, path: PathSegment[], keyPos: SourcePos | undefined): LNode {
    const here = (n: { range?: [number, number, number] | null } | null | undefined): SourcePos =>
      n?.range ? this.at(n.range[0]) : (keyPos ?? this.at(0));
    const withKey = <T extends LNode>(n: T): T => {
      if (keyPos) n.keyPos = keyPos;
      return n;
    };
    if (node === null || node === undefined) return withKey({ kind: 'scalar', value: null, pos: keyPos ?? this.at(0) });
    if (isAlias(node)) {
      const target = node.resolve(this.doc);
      if (!target || this.expanding.has(target) || ++this.aliases > MAX_ALIAS_EXPANSIONS) {
        this.issues.push({ pos: here(node), path, message: `alias *${node.source} cannot be expanded`, hint: 'refer only to anchors defined earlier, outside the aliased value itself' });
        return withKey({ kind: 'scalar', value: null, pos: here(node) });
      }
      this.expanding.add(target);
      const out = this.convert(target, path, keyPos);
      this.expanding.delete(target);
      out.pos = here(node);
      return out;
    }
    if (isScalar(node)) {
      const empty = node.value === null && node.range !== undefined && node.range !== null && node.range[0] === node.range[1];
      const v = node.value;
      const value = v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint' ? v : String(v);
      const out: LScalar = { kind: 'scalar', value, pos: empty && keyPos ? keyPos : here(node) };
      if (typeof node.source === 'string') out.source = node.source;
      return withKey(out);
    }
    if (isSeq(node)) {
      return withKey({ kind: 'seq', pos: here(node), items: node.items.map((item, i) => this.convert(item, [...path, i], undefined)) });
    }
    if (isMap(node)) {
      const entries = new Map<string, LNode>();
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const k = pair.key;
        if (!isScalar(k) || k.value === null || typeof k.value === 'object') {
          this.issues.push({
            pos: here((k as { range?: [number, number, number] } | null) ?? node),
            path,
            message: 'a key must be a plain word',
            hint: 'profile keys are simple names such as "name" or "rootfs"',
          });
          continue;
        }
        const key = String(k.value);
        entries.set(key, this.convert(pair.value, [...path, key], here(k)));
      }
      return withKey({ kind: 'map', pos: here(node), entries });
    }
    this.issues.push({ pos: keyPos ?? this.at(0), path, message: 'unsupported YAML node' });
    return withKey({ kind: 'scalar', value: null, pos: keyPos ?? this.at(0) });
  }
}

/** The plain data zod validates. Object.fromEntries keeps a key like "__proto__" an own key. */
export function toPlain(node: LNode): unknown {
  switch (node.kind) {
    case 'scalar':
      return node.value;
    case 'seq':
      return node.items.map(toPlain);
    case 'map':
      return Object.fromEntries([...node.entries].map(([k, v]) => [k, toPlain(v)]));
  }
}

export function nodeAt(root: LNode, path: readonly PathSegment[]): LNode | undefined {
  let n: LNode | undefined = root;
  for (const seg of path) {
    if (n === undefined) return undefined;
    if (n.kind === 'map') n = n.entries.get(String(seg));
    else if (n.kind === 'seq' && typeof seg === 'number') n = n.items[seg];
    else return undefined;
  }
  return n;
}

/** The deepest node that exists along `path`, and how many segments it consumed. */
export function deepestAt(root: LNode, path: readonly PathSegment[]): { node: LNode; depth: number } {
  let node = root;
  let depth = 0;
  for (const seg of path) {
    const next = nodeAt(node, [seg]);
    if (next === undefined) break;
    node = next;
    depth++;
  }
  return { node, depth };
}

/** How a YAML value reads in an error message. */
export function describeNode(n: LNode): string {
  if (n.kind === 'map') return 'a mapping';
  if (n.kind === 'seq') return 'a list';
  if (n.value === null) return n.source === undefined || n.source === '' ? 'an empty value' : 'null';
  if (typeof n.value === 'string') return `the string ${JSON.stringify(n.value)}`;
  if (typeof n.value === 'boolean') return `the boolean ${n.value}`;
  return `the number ${n.source ?? String(n.value)}`;
}
