import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { buildRecord, ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { tempDirs } from '../helpers/oracle-formats.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';
import { sha256File } from '../../builder/util/hash.ts';
import type { BuildRecord } from '../../builder/release/build-json.ts';

/**
 * The default profile built with every image format: each is what build.json says (sha256,
 * size), qemu-img reads each disk format as disk.raw, a second build writes every format byte
 * for byte again, and the qcow2 boots to the rootfs init under `ossify run` (TCG).
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const FORMATS = 'qcow2,vhd,vmdk,ova,gce,iso';

let dirA: string;
let dirB: string;
let record: BuildRecord;
const dirs = tempDirs();
afterAll(dirs.cleanup);

async function build(outRoot: string): Promise<string> {
  const r = await ossify(['build', 'profiles/default.yaml', '--out', outRoot, '--cache-dir', CACHE, '--json', '--output', FORMATS]);
  if (r.exitCode !== 0) throw new Error(`ossify build failed (${r.exitCode}):\n${r.stderr}`);
  return (JSON.parse(r.stdout) as { outDir: string }).outDir;
}

describe('the default profile in every image format', () => {
  beforeAll(async () => {
    requireTool('qemu-img', 'qemu-utils');
    requireTool('qemu-system-x86_64', 'qemu-system-x86');
    dirA = await build(dirs.make('formats-e2e-a'));
    dirB = await build(dirs.make('formats-e2e-b'));
    record = buildRecord(dirA);
  }, 900_000);

  it('lists each output in build.json with the sha256 and size of its file', async () => {
    expect(record.outputs.map((o) => o.format)).toEqual(['qcow2', 'vhd', 'vmdk', 'ova', 'gce', 'iso']);
    for (const o of record.outputs) expect(await sha256File(join(dirA, o.file)), o.file).toBe(o.sha256);
  });

  it('writes every format byte for byte again in a second build', () => {
    expect(buildRecord(dirB).outputs).toEqual(record.outputs);
  });

  it('holds disk.raw in every disk format, as qemu-img reads them', () => {
    const raw = join(dirA, 'disk.raw');
    expect(runOk('qemu-img', ['check', join(dirA, 'disk.qcow2')])).toContain('No errors were found');
    for (const [file, fmt] of [['disk.qcow2', 'qcow2'], ['disk.vhd', 'vpc'], ['disk.vmdk', 'vmdk']] as const) {
      const r = run('qemu-img', ['compare', '-f', 'raw', '-F', fmt, raw, join(dirA, file)]);
      expect(r.code, `${file}: ${r.stdout}${r.stderr}`).toBe(0);
    }
    expect(runOk('tar', ['-tzf', join(dirA, 'disk.raw.tar.gz')])).toBe('disk.raw\n');
  });

  it('carries a site build\'s seed (written after the disk) into its qcow2', async () => {
    const r = await ossify(['build', 'profiles/sites/store-0001.yaml', '--out', dirs.make('formats-e2e-site'), '--cache-dir', CACHE, '--json', '--output', 'qcow2']);
    expect(r.exitCode, r.stderr).toBe(0);
    const dir = (JSON.parse(r.stdout) as { outDir: string }).outDir;
    const seed = buildRecord(dir).partitions.find((p) => p.label === 'STATE')!;
    const c = run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', join(dir, 'disk.raw'), join(dir, 'disk.qcow2')]);
    expect(c.code, c.stdout + c.stderr).toBe(0);
    // What the qcow2 holds is the seed, not zeros on both sides: a tar header at the start of STATE.
    const fd = openSync(join(dir, 'disk.raw'), 'r');
    const head = Buffer.alloc(512);
    readSync(fd, head, 0, 512, seed.offset);
    closeSync(fd);
    expect(head.toString('latin1', 257, 262)).toBe('ustar');
  }, 300_000);

  it('boots the qcow2 under ossify run to the rootfs init on slot a', async () => {
    const r = await ossify(['run', join(dirA, 'disk.qcow2'), '--expect', 'OSSIFY-BOOT name=ossify-default version=1\\.0\\.0 slot=a', '--timeout', '240', '--no-reboot', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ matched: true });
  }, 300_000);
});
