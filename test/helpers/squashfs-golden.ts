import type { SquashfsOptions } from '../../builder/formats/squashfs/index.ts';
import { bytesContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { pattern } from './squashfs-trees.ts';

const te = new TextEncoder();

/** A fixed tree with every feature; its images' hashes are pinned below. */
export function goldenTree(): FileTree {
  const T = 1_700_000_000;
  const t = new FileTree({ mode: 0o755, uid: 0, gid: 0, mtime: T });
  const m = { mode: 0o644, uid: 0, gid: 0, mtime: T };
  t.set('bin/prog', { type: 'file', ...m, mode: 0o755, content: bytesContent(pattern(5 * 131072 + 777, 1)) });
  t.set('bin/noise', { type: 'file', ...m, content: bytesContent(pattern(2 * 131072, 2, true)) });
  t.set('bin/prog-copy', { type: 'file', ...m, content: bytesContent(pattern(5 * 131072 + 777, 1)) });
  t.set('bin/link', { type: 'hardlink', target: 'bin/prog' });
  const sparse = new Uint8Array(4 * 131072);
  sparse.set(pattern(1000, 3), 3 * 131072);
  t.set('var/sparse', { type: 'file', ...m, content: bytesContent(sparse) });
  for (let i = 0; i < 400; i++) t.set(`etc/conf.d/${String(i).padStart(4, '0')}.conf`, { type: 'file', ...m, uid: i % 3, content: bytesContent(te.encode(`key${i}=value${i}\n`.repeat(i % 17))) });
  t.set('etc/secret', { type: 'file', ...m, mode: 0o600, xattrs: { 'security.selinux': te.encode('system_u:object_r:shadow_t:s0'), 'user.note': te.encode('x') }, content: bytesContent(te.encode('s3cret')) });
  t.set('dev/console', { type: 'char', ...m, mode: 0o600, major: 5, minor: 1 });
  t.set('dev/sda', { type: 'block', ...m, mode: 0o660, gid: 6, major: 8, minor: 0 });
  t.set('run/initctl', { type: 'fifo', ...m });
  t.set('run/sock', { type: 'socket', ...m, mode: 0o777 });
  t.set('sbin/init', { type: 'symlink', ...m, mode: 0o777, target: '../bin/prog' });
  return t;
}

/**
 * sha256 of goldenTree()'s image per compressor. Same bytes on every machine, thread count and
 * run: a change here means the on-disk output changed (a new pako, @bokuweb/zstd-wasm or
 * node-liblzma release, or a writer change) and must be deliberate. Regenerated from the
 * single-threaded image when the embedded compressors were replaced by these npm packages
 * (gzip's hash did not change: pako with legacyHash is byte-identical to zlib).
 */
export const GOLDEN: Record<SquashfsOptions['compression'], string> = {
  gzip: '18c1807a9993389b12b7449580c4832f72e5d245ebf6cb81fce152c9e7f9f736',
  zstd: '07bf603e590508cd235e199c73eb21be3d7217d97cbf338564c5e9b0ed4be972',
  xz: 'c30849e11c52fe141a1078066c3cbf3d6a1ea616b8d0a60dfc6cca8dd8ce731a',
  none: 'f838e8d09dfb36620885edaae9d71916a9f98f5a105b3cb31ad88cd72836e49d',
};

