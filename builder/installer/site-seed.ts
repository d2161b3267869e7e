import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SITE_SEED } from '../release/artifacts.ts';
import { readTar } from '../formats/tar.ts';
import { seedPendingBlock, seedProblem, SITE_ENV_PATH, SITE_SEED_PARTITION, seedRoom, siteNameOfEnv, stateSeedKind, type StateSeedKind } from '../site/data.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { STATE_SEED_AREA } from '../disk/layout.ts';
import type { partitionIo } from './disk.ts';
import type { ReleaseSource } from './release.ts';

/**
 * fleet (docs/fleet.md): a site release carries `site.tar`, the seed the rootfs init lays over
 * /etc, and the installers put it at the start of the STATE partition. STATE has no file
 * system, so "atomic" is done with the seed's first block, the only place the init looks:
 *
 *   1. the first block becomes SEED_PENDING_MARKER (one 512-byte write): no seed from here on;
 *   2. the rest of the seed goes in behind it, is synced, read back and compared;
 *   3. the seed's own first block (the `ustar` header) goes in: one 512-byte write, synced,
 *      then the whole seed is read back and compared.
 *
 * A kill leaves the old seed (before 1), no seed (between 1 and 3: the init applies nothing and
 * a rerun recognises the marker as its own), or the new seed (after 3): never a mixture. The
 * seed ends with the tar's two zero blocks, so whatever a longer old seed left behind it is
 * never read. Anything at the start of STATE that is not a seed, the marker or zeros is data
 * ossify did not write, and the installers refuse to overwrite it.
 */

export type PartIo = ReturnType<typeof partitionIo>;

/** The site data a release carries, read and checked against its release.json. */
export interface ReleaseSeed {
  bytes: Uint8Array;
  /** SITE_NAME in the seed's etc/ossify/site.env. */
  name: string | undefined;
}

/** How far readStateSeed follows a seed's headers before it calls the seed damaged. */
const SEED_WALK_LIMIT = 64 << 20;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const hexOf = (s: string) => s.replace(/^sha256:/, '');

/** The site name a seed records (etc/ossify/site.env), read with the tar reader; undefined when it has none or is not a tar. */
export async function seedSiteName(seed: Uint8Array): Promise<string | undefined> {
  try {
    for await (const e of readTar((async function* () {
      yield seed;
    })())) {
      if (e.path === SITE_ENV_PATH && e.type === 'file') {
        const parts: Uint8Array[] = [];
        for await (const c of e.body) parts.push(c);
        return siteNameOfEnv(Buffer.concat(parts).toString('utf8'));
      }
      for await (const _ of e.body) void _;
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** `site.tar` of a release, when it has one: the bytes verifyRelease checked, hashed again as read. */
export async function releaseSeed(src: ReleaseSource): Promise<ReleaseSeed | undefined> {
  const want = src.release.artifacts[SITE_SEED];
  if (!want) return undefined;
  const bytes = await readFile(src.path(SITE_SEED));
  if (bytes.length !== want.size || sha(bytes) !== hexOf(want.sha256)) throw new InputError(`${src.dir}/${SITE_SEED} changed after it was verified`);
  const problem = seedProblem(bytes);
  if (problem) throw new InputError(`${src.release.name} ${src.release.version}: ${SITE_SEED} cannot be a site seed: ${problem}`, { hint: 'rebuild the site with ossify build' });
  return { bytes, name: await seedSiteName(bytes) };
}

/** What the start of STATE holds, with the seed's site name when it is one. */
export interface StateSeed {
  kind: StateSeedKind;
  name?: string | undefined;
  /** The seed's bytes up to and including its end-of-archive blocks; undefined if it does not parse. */
  bytes?: Uint8Array | undefined;
}

/** Reads the start of STATE: a seed is walked header by header (never past the partition) to its end. */
export async function readStateSeed(io: PartIo): Promise<StateSeed> {
  const head = await io.read(0, Math.min(STATE_SEED_AREA, io.size));
  const kind = stateSeedKind(head);
  if (kind !== 'seed') return { kind };
  // 512-byte chunks: the reader takes exactly the blocks up to the first zero block, so what it
  // consumed, plus the second zero block, is the seed's length.
  // A seed is a few KiB; one that claims more than SEED_WALK_LIMIT bytes counts as damaged.
  const limit = Math.min(io.size, SEED_WALK_LIMIT) - (Math.min(io.size, SEED_WALK_LIMIT) % 512);
  let consumed = 0;
  const blocks = (async function* () {
    let window = head;
    let windowAt = 0;
    for (let off = 0; off + 512 <= limit; off += 512) {
      if (off + 512 > windowAt + window.length) {
        windowAt = off;
        window = await io.read(off, Math.min(STATE_SEED_AREA, limit - off));
      }
      consumed = off + 512;
      yield window.subarray(off - windowAt, off - windowAt + 512);
    }
  })();
  let name: string | undefined;
  try {
    for await (const e of readTar(blocks)) {
      const parts: Uint8Array[] = [];
      for await (const c of e.body) if (e.path === SITE_ENV_PATH) parts.push(c);
      if (e.path === SITE_ENV_PATH && e.type === 'file') name = siteNameOfEnv(Buffer.concat(parts).toString('utf8'));
    }
  } catch {
    return { kind };
  }
  const length = consumed + 512;
  if (length > limit) return { kind, name };
  const bytes = await io.read(0, length);
  return { kind, name, bytes: seedProblem(bytes) ? undefined : bytes };
}

/** Refuses, before anything is written, a STATE whose start ossify did not write, or one seeded for another site. */
export function checkStateForSeed(disk: string, current: StateSeed, seed: ReleaseSeed, opts: { replaceSite?: boolean }): void {
  if (current.kind === 'other') {
    throw new InputError(`${disk}: the ${SITE_SEED_PARTITION} partition holds data that ossify did not write (no site seed, not zeros); writing the site data over it would destroy it`, {
      hint: `move that data elsewhere and clear the first MiB of ${SITE_SEED_PARTITION}, or install on a fresh disk`,
    });
  }
  if (current.kind === 'seed' && current.name !== undefined && seed.name !== undefined && current.name !== seed.name && !opts.replaceSite) {
    throw new InputError(`${disk} holds the site data of ${current.name}, but the release is site ${seed.name}`, {
      hint: 'use the image built for this machine\'s site, or pass --replace-site to make this machine the other site',
    });
  }
}

/** Puts `seed` at the start of STATE as described above; false when it was there already. */
export async function writeStateSeed(io: PartIo, seed: Uint8Array): Promise<boolean> {
  if (seed.length > seedRoom(io.size)) throw new InputError(`the site data (${seed.length} bytes) does not fit the seed area of the ${SITE_SEED_PARTITION} partition (${seedRoom(io.size)} bytes)`);
  if (Buffer.from(await io.read(0, seed.length)).equals(seed)) return false;
  await io.write(0, seedPendingBlock());
  await io.sync();
  const tail = seed.subarray(512);
  await io.write(512, tail);
  await io.sync();
  if (sha(await io.read(512, tail.length)) !== sha(tail)) throw new OssifyError(`${SITE_SEED_PARTITION} reads back differently than the site data written to it: the disk is failing`);
  await io.write(0, seed.subarray(0, 512));
  await io.sync();
  if (sha(await io.read(0, seed.length)) !== sha(seed)) throw new OssifyError(`${SITE_SEED_PARTITION} reads back differently than the site data written to it: the disk is failing`);
  return true;
}

/** For logs: what replacing `current` by `seed` means. */
export function describeSeedChange(current: StateSeed, seed: ReleaseSeed): string {
  const to = seed.name ?? 'unnamed site';
  switch (current.kind) {
    case 'empty':
      return `site ${to}: ${SITE_SEED_PARTITION} has no site data yet`;
    case 'pending':
      return `site ${to}: finishing an interrupted site data write`;
    case 'seed':
      if (current.bytes && Buffer.from(current.bytes).equals(seed.bytes)) return `site ${to}: STATE holds this site data already`;
      return current.name === seed.name ? `site ${to}: replacing its site data` : `site ${current.name ?? 'unknown'} → ${to}: replacing the site data`;
    default:
      return `site ${to}`;
  }
}
