import type { Command } from 'commander';
import { join } from 'node:path';
import { listCache, parseDuration, pruneCache } from '../cache/prune.ts';
import { StageCache } from '../cache/store.ts';
import { parseSize } from '../profile/schema.ts';
import { InputError } from '../util/errors.ts';

/** fleet: `ossify cache ls|prune`: the stage cache under <cache-dir>/stages. */

interface CacheFlags {
  out: string;
  cacheDir?: string;
  json?: boolean;
}

function mib(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`;
}

function openCache(o: CacheFlags): StageCache {
  return StageCache.open(o.cacheDir ?? join(o.out, 'cache'));
}

function size(text: string): number {
  try {
    return parseSize(text);
  } catch {
    throw new InputError(`--max-size ${text} is not a size`, { hint: 'e.g. 500MiB, 20GiB' });
  }
}

export function registerCacheCommand(program: Command): Command {
  const cache = program.command('cache').description('list or prune the stage cache (<cache-dir>/stages, see docs/fleet.md)');
  const common = (c: Command) =>
    c
      .option('-o, --out <dir>', 'output root directory whose cache/ is meant', 'out')
      .option('--cache-dir <dir>', 'cache directory (default: <out>/cache)')
      .option('--json', 'print JSON');

  common(cache.command('ls').description('list stage records, most recently used first')).action(async (o: CacheFlags) => {
    const { entries, storedBytes } = await listCache(openCache(o));
    if (o.json) {
      process.stdout.write(`${JSON.stringify({ entries: entries.map((e) => ({ ...e, lastUsed: e.lastUsed.toISOString() })), storedBytes }, null, 2)}\n`);
      return;
    }
    process.stdout.write(`${'KEY'.padEnd(14)}${'STEP'.padEnd(17)}${'PROFILE'.padEnd(28)}${'SIZE'.padStart(11)}  LAST USED\n`);
    for (const e of entries) {
      const who = `${e.profile ?? '-'}${e.site ? `/${e.site}` : ''}`;
      process.stdout.write(`${e.key.slice(0, 12).padEnd(14)}${e.step.padEnd(17)}${who.slice(0, 27).padEnd(28)}${mib(e.bytes).padStart(11)}  ${e.lastUsed.toISOString()}\n`);
    }
    process.stdout.write(`${entries.length} records; ${mib(storedBytes)} of blobs (each stored once)\n`);
  });

  common(cache.command('prune').description('remove stage records (and the blobs only they used)'))
    .option('--all', 'remove everything')
    .option('--older-than <age>', 'remove records not used for this long (30m, 12h, 7d, 2w)')
    .option('--max-size <size>', 'then remove the least recently used until the cache takes at most this (e.g. 20GiB)')
    .option('--dry-run', 'only say what would go')
    .action(async (o: CacheFlags & { all?: boolean; olderThan?: string; maxSize?: string; dryRun?: boolean }) => {
      const r = await pruneCache(openCache(o), {
        ...(o.all ? { all: true } : {}),
        ...(o.olderThan !== undefined ? { olderThan: parseDuration(o.olderThan) } : {}),
        ...(o.maxSize !== undefined ? { maxSize: size(o.maxSize) } : {}),
        ...(o.dryRun ? { dryRun: true } : {}),
      });
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ ...r, removed: r.removed.map((e) => ({ ...e, lastUsed: e.lastUsed.toISOString() })) }, null, 2)}\n`);
        return;
      }
      for (const e of r.removed) process.stdout.write(`${o.dryRun ? 'would remove' : 'removed'} ${e.key.slice(0, 12)} ${e.step}${e.profile ? ` (${e.profile}${e.site ? `/${e.site}` : ''})` : ''}\n`);
      process.stdout.write(`${r.removed.length} records ${o.dryRun ? 'would be ' : ''}removed, ${r.kept} kept${o.dryRun ? '' : `; ${mib(r.freedBytes)} freed`}\n`);
    });
  return cache;
}
