import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildRecord } from '../../builder/release/build-json.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { requireTool } from '../helpers/oracle.ts';

/**
 * The example fleet (profiles/sites/*.yaml, sites of the default profile) built as a user
 * would, several profiles in one `ossify build`; a site's disk boots in QEMU and its init
 * applies the site data from the STATE partition.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
type Built = BuildRecord & { outDir: string; file: string; cache: Record<string, string>; installer: { manifestDigest: string } };

let out: string;
let built: Built[];

beforeAll(async () => {
  for (const [tool, pkg] of [
    ['qemu-system-x86_64', 'qemu-system-x86'],
    ['sgdisk', 'gdisk'],
  ] as const) requireTool(tool, pkg);
  out = await mkdtemp(join(tmpdir(), 'ossify-e2e-sites-'));
  const r = await ossify(['build', '--matrix', 'profiles/sites', '--jobs', '2', '--out', out, '--cache-dir', CACHE, '--json']);
  if (r.exitCode !== 0) throw new Error(`ossify build --matrix profiles/sites failed (${r.exitCode}):\n${r.stderr}`);
  built = JSON.parse(r.stdout) as Built[];
}, 900_000);

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

describe('the example fleet', () => {
  it('builds every site with the default image\'s OS artifacts', async () => {
    expect(built.map((b) => b.site?.name).sort()).toEqual(['store-0001', 'store-0002', 'store-0003']);
    const dflt = await ossify(['validate', 'profiles/default.yaml']);
    const digest = /digest:\s+(sha256:[0-9a-f]{64})/.exec(dflt.stdout)![1];
    for (const a of ['rootfs.squashfs', 'vmlinuz', 'initramfs.img']) {
      expect(new Set(built.map((b) => b.artifacts[a]!.sha256)).size, a).toBe(1);
    }
    for (const b of built) {
      expect(b.baseDigest).toBe(digest);
      expect(b.artifacts['site.tar']!.size).toBeLessThan(32 << 10);
      const onDisk = JSON.parse(await readFile(join(b.outDir, 'build.json'), 'utf8')) as BuildRecord;
      expect(onDisk.site).toEqual(b.site);
    }
  });

  it('boots a site whose init applies the site data over /etc', async () => {
    const site = built.find((b) => b.site?.name === 'store-0002')!;
    const r = await runDisk({
      disk: join(site.outDir, 'disk.raw'),
      expect: /OSSIFY-BOOT name=ossify-default version=1\.0\.0 slot=a/,
      timeout: 240,
      noReboot: true,
      snapshot: true,
    });
    expect(r.matched, r.log.slice(-4000)).toBe(true);
    expect(r.log).toContain('OSSIFY-SITE name=store-0002 hostname=store-0002.fleet.example');
  }, 300_000);

  it('boots another site\'s data after `ossify upgrade` from that site\'s release rewrote STATE', async () => {
    const from = built.find((b) => b.site?.name === 'store-0001')!;
    const to = built.find((b) => b.site?.name === 'store-0003')!;
    const disk = join(out, 'moved.raw');
    await copyFile(join(from.outDir, 'disk.raw'), disk);
    // Same OS, other site: only STATE changes, and only when asked to.
    const refused = await ossify(['upgrade', '--from', to.outDir, '--disk', disk]);
    expect(refused.exitCode, refused.stderr).toBe(2);
    const u = await ossify(['upgrade', '--from', to.outDir, '--disk', disk, '--replace-site', '--json']);
    expect(u.exitCode, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout)).toMatchObject({ alreadyInstalled: true, site: { name: 'store-0003', written: true } });
    const r = await runDisk({ disk, expect: /OSSIFY-BOOT name=ossify-default version=1\.0\.0 slot=a/, timeout: 240, noReboot: true });
    expect(r.matched, r.log.slice(-4000)).toBe(true);
    expect(r.log).toContain('OSSIFY-SITE name=store-0003 hostname=store-0003.fleet.example');
    expect(r.log).not.toContain('store-0001');
  }, 300_000);
});
