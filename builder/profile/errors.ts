import { InputError } from '../util/errors.ts';

/** A key path into a profile: mapping keys and list indices, as zod reports them. */
export type PathSegment = string | number;

/** A place in a profile file. `file` is absolute; lines and columns count from 1. */
export interface SourcePos {
  file: string;
  line: number;
  column: number;
}

/** One problem found while loading, before it is rendered for the user. */
export interface RawIssue {
  /** Absent only when there is no place to point at (the top profile cannot be read). */
  pos?: SourcePos;
  /** Used when `pos` is absent, to still name the file. */
  file?: string;
  path: PathSegment[];
  message: string;
  hint?: string;
}

/** A problem as the user sees it: `file` is shown as the user gave it (relative to cwd). */
export interface ProfileIssue {
  file: string;
  line?: number;
  column?: number;
  /** Dotted key path such as `rootfs.inputs[1].dir`; empty for the whole file. */
  path: string;
  message: string;
  hint?: string;
}

/**
 * Every problem in a profile, all at once, one per line, so a user fixes a profile in one
 * round instead of one error per run. An InputError, so the CLI exits 2.
 */
export class ProfileError extends InputError {
  readonly issues: readonly ProfileIssue[];
  constructor(issues: ProfileIssue[]) {
    const hints = [...new Set(issues.flatMap((i) => (i.hint === undefined ? [] : [i.hint])))];
    super(issues.map(formatIssue).join('\n'), hints.length > 0 ? { hint: hints.join('\n') } : {});
    this.name = 'ProfileError';
    this.issues = issues;
  }
}

export function formatIssue(i: ProfileIssue): string {
  const where = i.line === undefined ? i.file : `${i.file}:${i.line}:${i.column ?? 1}`;
  return `${where}: ${i.message}${i.path === '' ? '' : ` at ${i.path}`}`;
}

export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/**
 * Renders raw issues for the user: files shown via `display`, sorted by file (in the order
 * given by `fileRank`, the top profile first) and then by position, duplicates dropped
 * (zod reports some violations twice, e.g. an integer out of the safe range).
 */
export function toProfileIssues(
  raw: readonly RawIssue[],
  display: (absFile: string) => string,
  fileRank: (absFile: string) => number,
): ProfileIssue[] {
  const sorted = [...raw].sort((a, b) => {
    const fa = a.pos?.file ?? a.file ?? '';
    const fb = b.pos?.file ?? b.file ?? '';
    return (
      fileRank(fa) - fileRank(fb) ||
      (fa < fb ? -1 : fa > fb ? 1 : 0) ||
      (a.pos?.line ?? 0) - (b.pos?.line ?? 0) ||
      (a.pos?.column ?? 0) - (b.pos?.column ?? 0)
    );
  });
  const seen = new Set<string>();
  const out: ProfileIssue[] = [];
  for (const r of sorted) {
    const issue: ProfileIssue = { file: display(r.pos?.file ?? r.file ?? ''), path: formatPath(r.path), message: r.message };
    if (r.pos) {
      issue.line = r.pos.line;
      issue.column = r.pos.column;
    }
    if (r.hint !== undefined) issue.hint = r.hint;
    const key = formatIssue(issue);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(issue);
  }
  return out;
}

/** Optimal-string-alignment distance: Levenshtein plus adjacent transpositions ("dri" → "dir"). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The closest candidate, if it is close enough to be a plausible typo. Case differences are
 * free ("blocksize" → "blockSize"); otherwise about one edit per three characters.
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Infinity;
  for (const c of candidates) {
    const dist = c.toLowerCase() === word.toLowerCase() ? 0 : editDistance(word, c);
    if (dist < bestDist) {
      best = c;
      bestDist = dist;
    }
  }
  const limit = Math.max(1, Math.floor(Math.max(word.length, best?.length ?? 0) / 3));
  return bestDist <= limit ? best : undefined;
}
