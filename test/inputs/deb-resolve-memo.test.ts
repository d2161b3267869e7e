import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadInput } from '../../builder/inputs/index.ts';
import { aptFingerprint, memoDebResolution } from '../../builder/inputs/deb-resolve-memo.ts';
import type { DebPackagePin } from '../../builder/lock/types.ts';
import type { Input } from '../../builder/profile/schema.ts';
import { requireTool } from '../helpers/oracle.ts';

/**
 * An unpinned `deb:` input is resolved by apt once per apt state: later builds read the memo
 * instead of paying `apt-cache show` (most of a second per call) again.
 */
describe('deb resolution memo', () => {
  let work: string;
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ossify-deb-memo-'));
  });
  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  const pin: DebPackagePin = { package: 'p', version: '1.0', architecture: 'amd64', sha256: 'a'.repeat(64) };

  it('resolves once per key, again for another key or an unreadable memo', async () => {
    const dir = join(work, 'memo');
    let calls = 0;
    const resolve = async () => {
      calls++;
      return [pin];
    };
    expect(await memoDebResolution(dir, { deb: 'p' }, resolve)).toEqual([pin]);
    expect(await memoDebResolution(dir, { deb: 'p' }, resolve)).toEqual([pin]);
    expect(calls).toBe(1);
    await memoDebResolution(dir, { deb: 'q' }, resolve);
    expect(calls).toBe(2);
    const files = await readdir(join(dir, 'resolve-v2'));
    expect(files).toHaveLength(2);
    for (const f of files) await writeFile(join(dir, 'resolve-v2', f), '[{"package": "p"}]');
    expect(await memoDebResolution(dir, { deb: 'p' }, resolve)).toEqual([pin]);
    expect(calls).toBe(3);
  });

  it('apt state stands in the key: its configuration and package lists', async () => {
    const a = await aptFingerprint({});
    expect(await aptFingerprint({})).toBe(a);
    expect(await aptFingerprint({ APT_CONFIG: '/elsewhere/apt.conf' })).not.toBe(a);
  });

  it('a second load of a package by name runs neither apt-cache nor apt-get', async () => {
    requireTool('apt-cache', 'apt');
    const cacheDir = join(work, 'cache');
    const input = { deb: 'busybox-static', depends: false } as Input;
    const first = await loadInput(input, { cacheDir });
    // apt-cache and apt-get that fail loudly, first on PATH.
    const bin = join(work, 'bin');
    await mkdir(bin, { recursive: true });
    for (const tool of ['apt-cache', 'apt-get']) {
      await writeFile(join(bin, tool), `#!/bin/sh\necho "${tool} must not run" >&2\nexit 1\n`);
      await chmod(join(bin, tool), 0o755);
    }
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const second = await loadInput(input, { cacheDir });
      expect(second.sources).toEqual(first.sources);
      // The stubs do bite: an input not resolved before needs apt and fails.
      await expect(loadInput({ deb: 'dmsetup', depends: false } as Input, { cacheDir })).rejects.toThrow();
    } finally {
      process.env.PATH = path;
    }
  }, 120_000);
});
