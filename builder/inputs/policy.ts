import type { InputAllow } from '../profile/schema.ts';
import { FileTree, type Entry } from '../tree/tree.ts';

/** The defaults of `allow:` (see InputAllow in the profile schema for why). */
export const ALLOW_DEFAULTS: Required<InputAllow> = { devices: false, xattrs: false, setuid: true };

export interface PolicyReport {
  devices: string[];
  xattrs: string[];
  setuid: string[];
}

/**
 * Removes what an input may not carry into the image: device nodes, extended attributes,
 * setuid/setgid bits. Dropped entries are reported, never silently kept or half-kept.
 * A hard link to a dropped device cannot exist (links only point at regular files).
 */
export function applyAllow(tree: FileTree, allow: InputAllow | undefined): { tree: FileTree; report: PolicyReport } {
  const a = { ...ALLOW_DEFAULTS, ...allow };
  const report: PolicyReport = { devices: [], xattrs: [], setuid: [] };
  for (const [p, e] of [...tree.walk()]) {
    if (e.type === 'hardlink') continue;
    if (!a.devices && (e.type === 'char' || e.type === 'block')) {
      tree.delete(p);
      report.devices.push(p);
      continue;
    }
    let out: Entry = e;
    if (!a.xattrs && e.xattrs && Object.keys(e.xattrs).length) {
      const { xattrs: _x, ...rest } = e;
      out = rest as Entry;
      report.xattrs.push(p);
    }
    if (e.type === 'file' && e.mode & 0o6000) {
      let mode = e.mode;
      // allRoot re-owns files as root: a user's setuid file must not become setuid-root.
      if (!a.setuid || e.uid !== 0) mode &= ~0o4000;
      if (!a.setuid || e.gid !== 0) mode &= ~0o2000;
      if (mode !== e.mode) {
        out = { ...(out as typeof e), mode };
        report.setuid.push(p);
      }
    }
    if (out !== e) tree.set(p, out);
  }
  return { tree, report };
}

export function describePolicy(origin: string, r: PolicyReport): string[] {
  const lines: string[] = [];
  const few = (ps: string[]) => `${ps.slice(0, 3).join(', ')}${ps.length > 3 ? `, … (${ps.length})` : ''}`;
  if (r.devices.length) lines.push(`${origin}: dropped ${r.devices.length} device node(s) (allow.devices is off): ${few(r.devices)}`);
  if (r.xattrs.length) lines.push(`${origin}: stripped extended attributes from ${r.xattrs.length} entr(ies) (allow.xattrs is off): ${few(r.xattrs)}`);
  if (r.setuid.length) lines.push(`${origin}: cleared setuid/setgid on ${r.setuid.length} file(s): ${few(r.setuid)}`);
  return lines;
}
