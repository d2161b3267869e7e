import fc from 'fast-check';
import { bytesContent } from '../../builder/tree/content.ts';
import { FileTree, type Entry, type InodeEntry, type Meta } from '../../builder/tree/tree.ts';
import { listingLine, type Inode } from '../../builder/formats/squashfs/reader.ts';
import { encodeDev } from '../../builder/formats/squashfs/inode.ts';

const enc = new TextEncoder();

/** Deterministic filler: compressible (small alphabet) or noisy, from a seed. */
export function pattern(n: number, seed: number, noisy = false): Uint8Array {
  const b = new Uint8Array(n);
  let x = (seed >>> 0) || 0x1234567;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = noisy ? x & 0xff : 97 + (x % 5);
  }
  return b;
}

/** Names squashfs, Linux and the oracles' input formats all accept (no NUL, '/', newline). */
const plainName = fc.stringMatching(/^[A-Za-z0-9._-]{1,16}$/);
const unicodeName = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 12 })
  .map((s) => s.replace(/[\u0000-\u001f\u007f/]/g, '_'));
const oddName = fc.constantFrom('with space', ' lead', 'trail ', 'quote"d', 'back\\slash', 'tab\there', 'ünïcödé', '日本語のファイル', '🙂🙃', '-dash', '#hash', '$dollar', "it's");
const longName = fc.integer({ min: 200, max: 255 }).chain((n) =>
  fc.constantFrom('x', 'é', '日').map((ch) => {
    let s = '';
    while (enc.encode(s + ch).length <= n) s += ch;
    return s;
  }),
);
export const nameArb = fc
  .oneof({ weight: 6, arbitrary: plainName }, { weight: 2, arbitrary: unicodeName }, { weight: 2, arbitrary: oddName }, { weight: 1, arbitrary: longName })
  .filter((s) => s !== '.' && s !== '..' && s.length > 0 && enc.encode(s).length <= 255 && !s.includes('\t'));

const metaArb: fc.Arbitrary<Meta> = fc.record({
  mode: fc.oneof(fc.constantFrom(0o755, 0o644, 0o600, 0o4755, 0o2755, 0o1777, 0o000, 0o7777), fc.integer({ min: 0, max: 0o7777 })),
  uid: fc.oneof(fc.constantFrom(0, 1, 1000, 65534, 65535, 65536, 2 ** 31, 4294967294), fc.integer({ min: 0, max: 4294967295 })),
  gid: fc.oneof(fc.constantFrom(0, 5, 100, 65534, 2 ** 31 + 7), fc.integer({ min: 0, max: 4294967295 })),
  mtime: fc.oneof(fc.constant(1_700_000_000), fc.integer({ min: 0, max: 4294967295 })),
});

const xattrValue = fc.oneof(
  fc.stringMatching(/^[a-z][a-zA-Z0-9_:.]{0,40}$/).map((s) => enc.encode(s)),
  fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => {
    b[0] = 1; // a control byte: rdsquashfs prints the value as hex
    return b;
  }),
);
const xattrsArb = fc.option(
  fc.dictionary(
    fc.tuple(fc.constantFrom('user.', 'trusted.', 'security.'), fc.stringMatching(/^[a-z][a-z0-9_.-]{0,20}$/)).map(([p, n]) => p + n).filter((k) => k !== 'security.capability'),
    xattrValue,
    { minKeys: 1, maxKeys: 4 },
  ),
  { freq: 3 },
);

export type FileSpec = { kind: 'empty' } | { kind: 'small'; len: number; seed: number } | { kind: 'blocks'; blocks: ('zero' | 'data' | 'noise')[]; tail: number; seed: number };
const fileSpec: fc.Arbitrary<FileSpec> = fc.oneof(
  fc.constant({ kind: 'empty' as const }),
  fc.record({ kind: fc.constant('small' as const), len: fc.integer({ min: 1, max: 5000 }), seed: fc.nat() }),
  fc.record({
    kind: fc.constant('blocks' as const),
    blocks: fc.array(fc.constantFrom('zero' as const, 'data' as const, 'noise' as const), { minLength: 1, maxLength: 4 }),
    tail: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 70000 })),
    seed: fc.nat(),
  }),
);

const MAX_MINOR = 2 ** 20 - 1;

export type LeafSpec =
  | { kind: 'file'; spec: FileSpec; dup: boolean }
  | { kind: 'symlink'; target: string }
  | { kind: 'char' | 'block'; major: number; minor: number }
  | { kind: 'fifo' | 'socket' };
const leafArb: fc.Arbitrary<LeafSpec> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('file' as const), spec: fileSpec, dup: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('symlink' as const), target: fc.oneof(fc.stringMatching(/^[A-Za-z0-9._/-]{1,60}$/), fc.constantFrom('/usr/lib/x', '../up/there', 'ünï/cödé', 'a'.repeat(300))) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('char' as const, 'block' as const), major: fc.integer({ min: 0, max: 4095 }), minor: fc.integer({ min: 0, max: MAX_MINOR }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('fifo' as const, 'socket' as const) }) },
);

export interface TreeSpec {
  root: Meta;
  dirs: { path: string[]; meta: Meta; xattrs: Record<string, Uint8Array> | null }[];
  leaves: { dir: number; name: string; leaf: LeafSpec; meta: Meta; xattrs: Record<string, Uint8Array> | null }[];
  links: { dir: number; name: string; to: number }[];
  deep: number;
}

export const treeSpecArb: fc.Arbitrary<TreeSpec> = fc.record({
  root: metaArb,
  dirs: fc.array(fc.record({ path: fc.array(nameArb, { minLength: 1, maxLength: 4 }), meta: metaArb, xattrs: xattrsArb }), { maxLength: 8 }),
  leaves: fc.array(fc.record({ dir: fc.nat(), name: nameArb, leaf: leafArb, meta: metaArb, xattrs: xattrsArb }), { maxLength: 25 }),
  links: fc.array(fc.record({ dir: fc.nat(), name: nameArb, to: fc.nat() }), { maxLength: 5 }),
  deep: fc.oneof(fc.constant(0), fc.integer({ min: 10, max: 40 })),
});

function fileBytes(spec: FileSpec, blockSize: number): Uint8Array {
  switch (spec.kind) {
    case 'empty':
      return new Uint8Array(0);
    case 'small':
      return pattern(spec.len, spec.seed);
    case 'blocks': {
      const out = new Uint8Array(spec.blocks.length * blockSize + spec.tail);
      spec.blocks.forEach((b, i) => {
        if (b !== 'zero') out.set(pattern(blockSize, spec.seed + i, b === 'noise'), i * blockSize);
      });
      out.set(pattern(spec.tail, spec.seed + 99), spec.blocks.length * blockSize);
      return out;
    }
  }
}

/** Builds the tree a spec describes; block size shapes multi-block and sparse files. */
export function buildTree(spec: TreeSpec, blockSize: number): FileTree {
  const t = new FileTree({ ...spec.root, mode: spec.root.mode });
  const dirs: string[] = [''];
  for (const d of spec.dirs) {
    const p = d.path.join('/');
    if (t.get(p)?.type === 'dir') continue;
    t.set(p, { type: 'dir', ...d.meta, ...(d.xattrs ? { xattrs: d.xattrs } : {}) });
    dirs.push(p);
  }
  if (spec.deep > 0) {
    const parts = Array.from({ length: spec.deep }, (_, i) => `level${i}`);
    const p = parts.join('/');
    t.set(`${p}/bottom`, { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1, content: bytesContent(enc.encode('deep\n')) });
    dirs.push(p);
  }
  const liveDirs = () => dirs.filter((d) => d === '' || t.get(d)?.type === 'dir');
  let lastFile: Uint8Array | undefined;
  const inodes: string[] = [];
  for (const l of spec.leaves) {
    const ds = liveDirs();
    const dir = ds[l.dir % ds.length]!;
    const p = dir === '' ? l.name : `${dir}/${l.name}`;
    if (t.get(p)?.type === 'dir') continue;
    const x = l.xattrs ? { xattrs: l.xattrs } : {};
    let e: Entry;
    switch (l.leaf.kind) {
      case 'file': {
        const data = l.leaf.dup && lastFile ? lastFile : fileBytes(l.leaf.spec, blockSize);
        lastFile = data;
        e = { type: 'file', ...l.meta, ...x, content: bytesContent(data) };
        break;
      }
      case 'symlink':
        // Linux symlinks are always 0777 (gensquashfs forces it too).
        e = { type: 'symlink', ...l.meta, mode: 0o777, ...x, target: l.leaf.target };
        break;
      case 'char':
      case 'block':
        e = { type: l.leaf.kind, ...l.meta, ...x, major: l.leaf.major, minor: l.leaf.minor };
        break;
      default:
        e = { type: l.leaf.kind, ...l.meta, ...x };
    }
    t.set(p, e);
    inodes.push(p);
  }
  const targets = inodes.filter((p) => {
    const e = t.get(p);
    return e !== undefined && e.type !== 'dir' && e.type !== 'hardlink';
  });
  for (const l of spec.links) {
    if (targets.length === 0) break;
    const ds = liveDirs();
    const dir = ds[l.dir % ds.length]!;
    const p = dir === '' ? l.name : `${dir}/${l.name}`;
    const to = targets[l.to % targets.length]!;
    if (t.has(p)) continue;
    t.set(p, { type: 'hardlink', target: to });
  }
  return t;
}

/** What `unsquashfs -lln` must print for this tree (UTC), directory sizes masked. */
export function expectedListing(tree: FileTree): string[] {
  const out: string[] = [];
  for (const [p, e0] of tree.walk()) {
    const e = e0.type === 'hardlink' ? (tree.resolve(p) as InodeEntry) : e0;
    const ino: Inode = { kind: e.type, type: 0, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, ino: 0, nlink: 1, xattrIndex: 0, dirSize: 0 };
    if (e.type === 'file') ino.size = e.content.size;
    if (e.type === 'symlink') ino.target = e.target;
    if (e.type === 'char' || e.type === 'block') {
      // unsquashfs -lln prints the raw 32-bit device word as (int)dev >> 8, dev & 0xff
      // rather than decoding 20-bit minors, so the expectation checks the raw encoding.
      const dev = encodeDev(e.major, e.minor);
      ino.major = (dev | 0) >> 8;
      ino.minor = dev & 0xff;
    }
    out.push(maskDirSize(listingLine(p, ino)));
  }
  return out;
}

export function maskDirSize(line: string): string {
  return line.startsWith('d') ? line.replace(/^(\S+ \S+)\s+\d+/, '$1 <dir>') : line;
}
