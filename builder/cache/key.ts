import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { canonicalJson, sha256Hex } from '../util/hash.ts';
import { packageInfo } from '../util/package-info.ts';

/**
 * Stage cache keys (docs/fleet.md): the sha256 of the canonical JSON of everything a stage's
 * output depends on. Every key carries the cache format, the builder's identity and the
 * step's own STEP_VERSION; the caller adds the profile slice the step reads, the digests of
 * its inputs' contents and of its upstream stages' outputs.
 */

/** Bumped when the layout of records or blobs changes; old records then simply never match. */
export const CACHE_FORMAT = 1;

/** `sha256` hex of the canonical JSON of `parts`. */
export function stageKey(parts: unknown): string {
  return sha256Hex(canonicalJson(parts));
}

let fingerprint: string | undefined;

/**
 * What identifies the builder in a key: the package version and a digest of the code that
 * makes artifacts. A release's code never changes under one version, but a checkout does: a
 * digest of the builder's own files means an edit to any stage's code (by anyone, whether or
 * not they bumped a STEP_VERSION) can never be answered with an output the old code made.
 * `commands/` and `cli.ts` only parse arguments (the options that matter enter keys on their
 * own), so editing them keeps the cache.
 */
export function builderIdentity(): { version: string; code: string } {
  fingerprint ??= codeDigest();
  return { version: packageInfo().version, code: fingerprint };
}

function codeDigest(): string {
  // builder/ when running from source, dist/builder/ when installed: whichever holds this file.
  const builderDir = dirname(dirname(fileURLToPath(import.meta.url)));
  const h = createHash('sha256');
  const walk = (dir: string, rel: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (r === 'commands' || r === 'cli.ts' || r === 'cli.js' || e.name.endsWith('.map') || e.name.endsWith('.d.ts')) continue;
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p, r);
      else if (e.isFile()) h.update(`${r}\0${sha256Hex(readFileSync(p))}\n`);
    }
  };
  walk(builderDir, '');
  return h.digest('hex');
}
