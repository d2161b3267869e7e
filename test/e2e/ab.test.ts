import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { openFatEditor } from '../../builder/formats/fat/mutate.ts';
import { openDisk, partitionIo } from '../../builder/installer/disk.ts';
import { probeLayout } from '../../builder/installer/layout.ts';
import { writePayloadDisk } from '../../builder/installer/payload-disk.ts';
import { openReleaseDir } from '../../builder/installer/release.ts';
import { CRASH_ENV } from '../../builder/installer/steps.ts';
import type { StatusReport } from '../../builder/installer/status.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { buildProfile, diskStatus, OSSIFY_BIN, ossify, ossifyOk, PROJECT_ROOT, slotOf } from '../helpers/cli.ts';
import { requireTool, run } from '../helpers/oracle.ts';

/**
 * The A/B acceptance tests, booted under QEMU + OVMF (TCG): install, upgrade, automatic
 * fallback from a release that never comes up, upgrades killed at many points, and the
 * on-device upgrade from a payload disk. Builds use small disks (profiles/test/ab-*.yaml).
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const BOOT_TIMEOUT = 150;
let out: string;
let v1: string;
let v2: string;
let v3: string;
/** The installed v1 disk after its first boot, and the v1 → v2 disk after its boot. */
let afterV1: string;
let afterV2: string;

const build = (profile: string) => buildProfile(`profiles/test/${profile}.yaml`, out, CACHE);

function disk(name: string, from?: string): string {
  const path = join(out, `${name}.raw`);
  if (from) copyFileSync(from, path);
  return path;
}

const cli = ossifyOk;
const status = diskStatus;

async function boot(path: string, expect: RegExp, extraDisks: string[] = []) {
  const r = await runDisk({ disk: path, expect, timeout: BOOT_TIMEOUT, ...(extraDisks.length ? { extraDisks } : {}) });
  if (!r.matched) throw new Error(`no /${expect.source}/ within ${BOOT_TIMEOUT} s; serial log:\n${r.log.slice(-6000)}`);
  return r;
}

/** fsck.fat -n on the ESP and sgdisk -v on the disk. */
async function oracles(path: string): Promise<void> {
  const d = await openDisk(path, { write: false });
  const layout = await probeLayout(d);
  const esp = Buffer.from(await d.read(layout.esp.offset, layout.esp.size));
  await d.close();
  const img = `${path}.esp`;
  writeFileSync(img, esp);
  const f = run('fsck.fat', ['-n', img]);
  await rm(img);
  expect(f.code, f.stdout).toBe(0);
  expect(f.stdout.trim().split('\n'), f.stdout).toHaveLength(2);
  expect(run('sgdisk', ['-v', path]).stdout).toMatch(/No problems found/);
}

async function espFiles(path: string, files: string[]): Promise<Record<string, string>> {
  const d = await openDisk(path, { write: false });
  try {
    const esp = await openFatEditor(partitionIo(d, (await probeLayout(d)).esp));
    const out: Record<string, string> = {};
    for (const f of files) out[f] = createHash('sha256').update(await esp.readFile(f)).digest('hex');
    return out;
  } finally {
    await d.close();
  }
}

const count = (log: string, re: RegExp) => log.match(new RegExp(re.source, 'g'))?.length ?? 0;

beforeAll(async () => {
  for (const [tool, pkg] of [
    ['qemu-system-x86_64', 'qemu-system-x86'],
    ['fsck.fat', 'dosfstools'],
    ['sgdisk', 'gdisk'],
  ] as const) {
    requireTool(tool, pkg);
  }
  out = await mkdtemp(join(tmpdir(), 'ossify-e2e-ab-'));
  v1 = await build('ab-v1');
  v2 = await build('ab-v2');
  v3 = await build('ab-v3-broken');
}, 900_000);

afterAll(async () => {
  if (out) await rm(out, { recursive: true, force: true });
});

describe('A/B install, upgrade and fallback in QEMU', () => {
  it('1. installs v1.0.0 (the same bytes as the build\'s disk), which boots from slot a', async () => {
    const d = disk('main');
    await cli(['install', '--from', v1, '--disk', d]);
    expect(createHash('sha256').update(readFileSync(d)).digest('hex')).toBe(JSON.parse(readFileSync(join(v1, 'build.json'), 'utf8')).artifacts['disk.raw'].sha256);
    await boot(d, /OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a/);
    const s = await status(d);
    expect(s.next).toBe('a');
    expect(slotOf(s, 'a')).toMatchObject({ bootsNext: true, entry: { state: 'good', file: 'ossify-a.conf' }, release: { name: 'ossify-ab', version: '1.0.0' } });
    afterV1 = disk('after-v1', d);
  }, 300_000);

  it('2. upgrades to v2.0.0, which boots from slot b and is blessed', async () => {
    const d = disk('main');
    await cli(['upgrade', '--from', v2, '--disk', d]);
    const before = await status(d);
    expect(slotOf(before, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'trying', triesLeft: 3 }, release: { version: '2.0.0', verified: true } });
    await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/);
    const s = await status(d);
    expect(s.next).toBe('b');
    expect(slotOf(s, 'b')).toMatchObject({ entry: { state: 'good', file: 'ossify-b.conf', generation: 2 }, release: { version: '2.0.0' } });
    expect(slotOf(s, 'a')).toMatchObject({ entry: { state: 'good' }, release: { version: '1.0.0' } });
    await oracles(d);
    afterV2 = disk('after-v2', d);
  }, 300_000);

  it('3. a broken v3.0.0 is tried three times, then v2.0.0 boots again and slot a is bad', async () => {
    const d = disk('main');
    await cli(['upgrade', '--from', v3, '--disk', d]);
    const r = await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/);
    expect(count(r.log, /OSSIFY-BROKEN: init of a broken release/)).toBe(3);
    expect(r.log.indexOf('OSSIFY-BOOT')).toBeGreaterThan(r.log.lastIndexOf('OSSIFY-BROKEN'));
    const s = await status(d);
    expect(s.next).toBe('b');
    expect(slotOf(s, 'a')).toMatchObject({ bootsNext: false, entry: { state: 'bad', triesLeft: 0, triesDone: 3, file: 'ossify-a+0-3.conf' }, release: { version: '3.0.0' } });
    expect(slotOf(s, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'good' }, release: { version: '2.0.0' } });
    const rb = await ossify(['rollback', '--disk', d]);
    expect(rb.exitCode).toBe(2);
    expect(rb.stderr).toMatch(/slot a \(3\.0\.0\) is bad/);
    await oracles(d);
  }, 400_000);

  describe('4. an upgrade killed at any point', () => {
    /** Kills the v1 → v2 upgrade at a step (test hook), checks the disk, boots it if asked, reruns. */
    async function killAt(point: string, bootAfterKill?: RegExp, bootAfterRerun = false) {
      const d = disk(`kill-${point.replace(/:/g, '-')}`, afterV1);
      const r = await ossify(['upgrade', '--from', v2, '--disk', d], { env: { [CRASH_ENV]: point } });
      expect(r.signal, r.stderr).toBe('SIGKILL');
      const s = await status(d);
      expect(s.next).toBe(point === 'end' ? 'b' : 'a');
      expect(slotOf(s, 'a')).toMatchObject({ entry: { state: 'good' }, release: { version: '1.0.0' } });
      expect(run('sgdisk', ['-v', d]).stdout).toMatch(/No problems found/);
      if (bootAfterKill) await boot(d, bootAfterKill);
      const again = JSON.parse((await cli(['upgrade', '--from', v2, '--disk', d, '--json'])).stdout);
      expect(again).toMatchObject({ slot: 'b', alreadyInstalled: point === 'end' });
      await oracles(d);
      if (bootAfterRerun) await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/);
      expect(slotOf(await status(d), 'b')).toMatchObject({ bootsNext: true, release: { version: '2.0.0', verified: true } });
    }

    it('half-way through writing the root: v1 boots; the rerun boots v2', () => killAt('write-root:524288', /OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a/, true), 400_000);
    it('just before the switch: v1 boots', () => killAt('switch', /OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a/), 300_000);
    it('just after the switch: v2 boots on trial, the rerun has nothing left to do', () => killAt('end', /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/), 300_000);

    // Every step boundary is killed in test/installer.test.ts with small synthetic releases; these are the real ones.
    it.each(['retire-entry', 'esp-files:7000000', 'stage-entry'])('at %s: status, fsck.fat and sgdisk agree the previous release boots next', (point) => killAt(point), 120_000);

    it('by an outside SIGKILL at seeded random times', async () => {
      const delays = fc.sample(fc.integer({ min: 300, max: 2500 }), { numRuns: 2, seed: 20240521 });
      for (const [i, ms] of delays.entries()) {
        const d = disk(`sigkill-${i}`, afterV1);
        const child = execa('node', [OSSIFY_BIN, 'upgrade', '--from', v2, '--disk', d], { cwd: PROJECT_ROOT, reject: false, env: { CI: '1' } });
        const timer = setTimeout(() => child.kill('SIGKILL'), ms);
        const r = await child;
        clearTimeout(timer);
        const s = await status(d);
        // Killed or not, the disk boots v1, or v2 on trial once the switch has happened.
        if (s.next === 'b') expect(slotOf(s, 'b')).toMatchObject({ entry: { state: 'trying', triesLeft: 3 }, release: { version: '2.0.0', verified: true } });
        else expect(slotOf(s, 'a')).toMatchObject({ bootsNext: true, entry: { state: 'good' }, release: { version: '1.0.0' } });
        expect(r.signal === 'SIGKILL' || r.exitCode === 0, `after ${ms} ms: ${r.stderr}`).toBe(true);
        await cli(['upgrade', '--from', v2, '--disk', d]);
        await oracles(d);
        expect((await status(d)).next).toBe('b');
      }
    }, 300_000);
  });

  it('5. the on-device upgrade, run inside the v1 system from a payload disk, gives the offline result', async () => {
    const d = disk('device', afterV1);
    const payload = join(out, 'payload-v2.tar');
    await writePayloadDisk(await openReleaseDir(v2), payload);
    const r = await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/, [payload]);
    expect(r.log).toMatch(/OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a[\s\S]*ossify-install: slot a is running; writing ossify-ab 2\.0\.0 to slot b[\s\S]*ossify-install: slot b boots next with 3 tries/);
    await oracles(d);
    const device = await status(d);
    const offline = await status(afterV2);
    const strip = (s: StatusReport) => ({ ...s, disk: undefined });
    expect(strip(device)).toEqual(strip(offline));
    const files = ['loader/entries/ossify-a.conf', 'loader/entries/ossify-b.conf', 'ossify/b/vmlinuz', 'ossify/b/initrd.img', 'ossify/b/release.json'];
    expect(await espFiles(d, files)).toEqual(await espFiles(afterV2, files));
  }, 300_000);
});
