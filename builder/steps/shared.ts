import { assertBinaryArch } from '../arch-check.ts';
import type { SlotVerity } from '../boot/entries.ts';
import type { VerityResult } from '../formats/verity.ts';
import type { LoadedProfile } from '../profile/load.ts';
import { readContent, type Content } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { canonicalJson } from '../util/hash.ts';

/** What more than one step needs. */

/** fleet: the digest the OS artifacts derive from: the profile's without its site data. */
export function baseDigestOf(p: LoadedProfile): string {
  return p.baseDigest ?? p.digest;
}

export function requireFile(tree: FileTree, path: string, what: string): Content {
  const e = tree.resolve(path);
  if (!e || e.type !== 'file') throw new InputError(`${what}: no ${path} in its input`);
  return e.content;
}

/** An input's kernel, busybox or boot loader must run on the profile's architecture (`hint`: how to get one that does). */
export async function checkArch(arch: string, content: Content, what: string, hint: string): Promise<void> {
  assertBinaryArch(await readContent(content), arch, what, hint);
}

// verified boot: what a slot's command line says of its verity tree.
export function slotVerity(v: VerityResult | undefined): SlotVerity | undefined {
  return v ? { rootHash: v.rootHash, salt: v.salt, dataBlocks: v.dataBlocks, hashOffset: v.hashOffset } : undefined;
}

/** Sources once each, in a stable order (the order steps recorded them in does not count). */
export function dedupeSources<S>(sources: readonly S[]): S[] {
  const seen = new Map<string, S>();
  for (const s of sources) seen.set(canonicalJson(s), s);
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, s]) => s);
}
