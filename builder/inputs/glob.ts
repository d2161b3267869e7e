/**
 * A small glob matcher with one fixed meaning on every Node version (node:path's
 * matchesGlob is still experimental in Node 20 and its semantics have moved):
 *
 * - `*` any run of characters except `/`; `?` one character except `/`;
 * - `**` as a whole segment: zero or more segments;
 * - `[...]` is not special; every other character matches itself.
 *
 * Patterns are tree paths: a leading `/` or `./` is ignored.
 */

export type GlobMatcher = (path: string) => boolean;

function segmentRegex(seg: string): string {
  let re = '';
  for (const ch of seg) {
    if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&');
  }
  return re;
}

export function globToRegExp(pattern: string): RegExp {
  const segs = pattern.split('/').filter((s) => s !== '' && s !== '.');
  // Matched against '/' + path, so every segment, `**` included, owns its leading slash.
  const re = segs.map((seg) => (seg === '**' ? '(?:/[^/]+)*' : `/${segmentRegex(seg)}`)).join('');
  return new RegExp(`^${re}$`, 's');
}

export function globMatcher(patterns: readonly string[]): GlobMatcher {
  const res = patterns.map(globToRegExp);
  return (path) => {
    const p = `/${path}`;
    return res.some((r) => r.test(p));
  };
}
