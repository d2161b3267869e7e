import type { Input, Program } from '../profile/schema.ts';
import { FileTree } from '../tree/tree.ts';
import { canonicalJson } from '../util/hash.ts';
import { programClosure } from './closure.ts';

/**
 * The closures of a profile's `programs:` list, merged into one tree. Programs sharing a
 * `from:` input load it once; the closure is always resolved inside that input's own tree.
 */
export async function programsTree(programs: readonly Program[], where: string, load: (input: Input) => Promise<FileTree>): Promise<{ tree: FileTree; files: string[] }> {
  const out = new FileTree();
  const files: string[] = [];
  const trees = new Map<string, Promise<FileTree>>();
  for (const [i, p] of programs.entries()) {
    const key = canonicalJson(p.from);
    if (!trees.has(key)) trees.set(key, load(p.from));
    const closure = await programClosure(await trees.get(key)!, [p.path], `${where}[${i}]`);
    out.overlay(closure.tree);
    for (const f of closure.files) if (!files.includes(f)) files.push(f);
  }
  return { tree: out, files };
}
