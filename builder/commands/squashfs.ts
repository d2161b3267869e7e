import type { Command } from 'commander';
import { resolve } from 'node:path';
import { writeSquashfs, type SquashfsResult } from '../formats/squashfs/index.ts';
import { GZIP_ENGINES, type CompressionName, type GzipEngine } from '../formats/squashfs/compress.ts';
import { loadTreeFromHost } from '../tree/from-host.ts';
import { InputError } from '../util/errors.ts';
import { sha256File } from '../util/hash.ts';

interface SquashfsCliOptions {
  output: string;
  comp: string;
  level?: string;
  blockSize?: string;
  threads?: string;
  allRoot?: boolean;
  fragments: boolean;
  alwaysFragments?: boolean;
  epoch?: string;
  gzipEngine: string;
  json?: boolean;
}

const COMPRESSORS = ['gzip', 'zstd', 'xz', 'none'];

/** Parses a non-negative integer option, accepting k/m suffixes for sizes. */
export function parseIntOption(name: string, value: string, sizes = false): number {
  const m = /^(\d+)([kKmM]?)$/.exec(value.trim());
  if (!m || (!sizes && m[2])) throw new InputError(`${name} must be ${sizes ? 'a size like 131072 or 128K' : 'a non-negative integer'}, got ${JSON.stringify(value)}`);
  const n = Number(m[1]) * (m[2] ? (m[2].toLowerCase() === 'k' ? 1024 : 1 << 20) : 1);
  if (!Number.isSafeInteger(n)) throw new InputError(`${name} is too large: ${value}`);
  return n;
}

/** The epoch every mtime is set to: --epoch, else SOURCE_DATE_EPOCH, else none (keep mtimes). */
export function resolveEpoch(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): number | undefined {
  if (flag !== undefined) return parseIntOption('--epoch', flag);
  const sde = env.SOURCE_DATE_EPOCH;
  if (sde === undefined || sde === '') return undefined;
  return parseIntOption('SOURCE_DATE_EPOCH', sde);
}

/**
 * `ossify squashfs DIR -o FILE`: the rootfs writer as a tool of its own. The directory is
 * normalised like a build normalises its tree (one epoch for every mtime, optional root
 * ownership) and written deterministically.
 */
export function registerSquashfsCommand(program: Command): Command {
  return program
    .command('squashfs')
    .description('write a directory as a reproducible squashfs image')
    .argument('<dir>', 'directory to pack (read with lstat: symlinks, devices and hard links are kept)')
    .requiredOption('-o, --output <file>', 'image to write (replaced atomically)')
    .option('--comp <name>', `compressor: ${COMPRESSORS.join(', ')}`, 'zstd')
    .option('--level <n>', 'compression level (default: gzip 9, zstd 15, xz 6)')
    .option('--block-size <n>', 'data block size, 4K..1M (default 128K)')
    .option('--threads <n>', 'compression threads (default: all cores; output does not depend on it)')
    .option('--all-root', 'make every file owned by uid/gid 0')
    .option('--no-fragments', 'store file tails as short blocks instead of packing them')
    .option('--always-fragments', 'pack the tails of large files into fragments too')
    .option('--gzip-engine <name>', 'gzip only: "portable" writes canonical zlib bytes on any machine; "node" uses Node\'s zlib, about twice as fast, bytes reproducible only on the same Node build and CPU family', 'portable')
    .option('--epoch <seconds>', 'mtime for every entry (default: SOURCE_DATE_EPOCH; unset keeps the files\' mtimes)')
    .option('--json', 'print the result as JSON')
    .action(async (dir: string, opts: SquashfsCliOptions) => {
      const compression = opts.comp as CompressionName;
      if (!COMPRESSORS.includes(compression)) throw new InputError(`unknown compressor ${JSON.stringify(opts.comp)}`, { hint: `use one of ${COMPRESSORS.join(', ')}` });
      const gzipEngine = opts.gzipEngine as GzipEngine;
      if (!GZIP_ENGINES.includes(gzipEngine)) throw new InputError(`unknown gzip engine ${JSON.stringify(opts.gzipEngine)}`, { hint: `use ${GZIP_ENGINES.join(' or ')}` });
      if (gzipEngine !== 'portable' && compression !== 'gzip') throw new InputError(`--gzip-engine applies to --comp gzip only, not ${compression}`);
      const epoch = resolveEpoch(opts.epoch);
      const tree = await loadTreeFromHost(dir);
      if (epoch !== undefined) {
        tree.normalise({ epoch, allRoot: !!opts.allRoot });
      } else if (opts.allRoot) {
        for (const [p, e] of tree.walk()) if (e.type !== 'hardlink') tree.set(p, { ...e, uid: 0, gid: 0 });
      }
      const out = resolve(opts.output);
      const res = await writeSquashfs(tree, out, {
        compression,
        ...(opts.level !== undefined ? { level: parseIntOption('--level', opts.level) } : {}),
        ...(opts.blockSize !== undefined ? { blockSize: parseIntOption('--block-size', opts.blockSize, true) } : {}),
        ...(opts.threads !== undefined ? { threads: parseIntOption('--threads', opts.threads) } : {}),
        gzipEngine,
        noFragments: !opts.fragments,
        alwaysFragments: !!opts.alwaysFragments,
        ...(epoch !== undefined ? { mkfsTime: epoch } : {}),
      });
      const sha256 = await sha256File(out);
      process.stdout.write(renderSquashfsResult(out, res, sha256, opts.json === true));
    });
}

export function renderSquashfsResult(path: string, r: SquashfsResult, sha256: string, json: boolean): string {
  if (json) return `${JSON.stringify({ path, sha256, ...r }, null, 2)}\n`;
  const lines = [
    `wrote ${path}`,
    `  size:        ${r.bytes} bytes (${r.bytesUsed} used)`,
    `  sha256:      ${sha256}`,
    `  compression: ${r.compression}${r.compression === 'none' ? '' : ` level ${r.level} (${r.engine})`}, block size ${r.blockSize}`,
    `  inodes:      ${r.inodes} (${r.files} regular files, ${r.dedupedFiles} duplicates stored once)`,
    `  fragments:   ${r.fragments}`,
    `  ids:         ${r.ids}, xattr sets: ${r.xattrSets}`,
    `  mkfs time:   ${r.mkfsTime} (${new Date(r.mkfsTime * 1000).toISOString()})`,
  ];
  return `${lines.join('\n')}\n`;
}
