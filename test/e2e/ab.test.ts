import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
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
import { diskStatus, OSSIFY_BIN, ossify, ossifyOk, PROJECT_ROOT, slotOf } from '../helpers/cli.ts';
import { requireTool, run } from '../helpers/oracle.ts';
import { startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * The A/B acceptance tests, booted under QEMU + OVMF (TCG), along the path users take: each
 * release is built with `ossify build --push` to a real docker-registry on 127.0.0.1, then
 * installed and upgraded with `--image REPO@sha256:…`: install, upgrade, automatic fallback
 * from a release that never comes up, upgrades killed at many points, and the on-device
 * upgrade from a payload pulled from the registry. The `--from DIR` path is kept in the
 * ESP comparison (no boot) and one of the killed upgrades. Builds use small disks
 * (profiles/test/ab-*.yaml).
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const BOOT_TIMEOUT = 150;
let out: string;
let v1: string;
let v2: string;
let v3: string;
let registry: RegistryHandle | undefined;
/** The pushed installer images, by digest. */
let ref1: string;
let ref2: string;
let ref3: string;
/** The installed v1 disk after its first boot, and the v1 → v2 disk after its boot. */
let afterV1: string;
let afterV2: string;
let ref4: string;

/** `ossify build --push`, as a release engineer runs it; the output directory and the pushed REPO@sha256:…. */
async function buildAndPush(profile: string, tag: string): Promise<{ dir: string; ref: string }> {
  const r = await ossifyOk(['build', `profiles/test/${profile}.yaml`, '--out', out, '--cache-dir', CACHE, '--push', `${registry!.host}/ossify/ab:${tag}`, '--insecure', '--json']);
  const j = JSON.parse(r.stdout) as { outDir: string; pushed?: string };
  if (!j.pushed?.includes('@sha256:')) throw new Error(`ossify build --push printed no digest reference:\n${r.stdout}`);
  return { dir: j.outDir, ref: j.pushed };
}

/** The CLI's `--image REF` arguments for this test's registry (plain HTTP on 127.0.0.1). */
const image = (ref: string) => ['--image', ref, '--insecure'];
/** Pulls land in out/ (a SIGKILLed run cannot remove its own). */
const tmpEnv = () => ({ TMPDIR: join(out, 'tmp') });

function disk(name: string, from?: string): string {
  const path = join(out, `${name}.raw`);
  if (from) copyFileSync(from, path);
  return path;
}

const cli = (args: string[]) => ossifyOk(args, tmpEnv());
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

async function espBytes(path: string): Promise<Buffer> {
  const d = await openDisk(path, { write: false });
  try {
    const layout = await probeLayout(d);
    return Buffer.from(await d.read(layout.esp.offset, layout.esp.size));
  } finally {
    await d.close();
  }
}

async function espText(path: string, file: string): Promise<string> {
  const d = await openDisk(path, { write: false });
  try {
    return Buffer.from(await (await openFatEditor(partitionIo(d, (await probeLayout(d)).esp))).readFile(file)).toString('utf8');
  } finally {
    await d.close();
  }
}

/** The kernel arguments a boot printed (overlays/test-device/sbin/init), one line per boot. */
const cmdlines = (log: string) => [...log.matchAll(/^OSSIFY-CMDLINE (.*?)\r?$/gm)].map((m) => m[1]!);

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
  mkdirSync(join(out, 'tmp'));
  registry = await startRegistry();
  ({ dir: v1, ref: ref1 } = await buildAndPush('ab-v1', '1.0.0'));
  ({ dir: v2, ref: ref2 } = await buildAndPush('ab-v2', '2.0.0'));
  ({ dir: v3, ref: ref3 } = await buildAndPush('ab-v3-broken', '3.0.0'));
  ({ ref: ref4 } = await buildAndPush('ab-v4-unhealthy', '4.0.0'));
}, 900_000);

afterAll(async () => {
  await registry?.stop();
  if (out) await rm(out, { recursive: true, force: true });
});

describe('A/B install, upgrade and fallback in QEMU', () => {
  it('0. install --image writes the ESP byte for byte as install --from and the build (the release\'s boot settings travel with it)', async () => {
    const fromDir = disk('from-dir');
    const fromImage = disk('from-image');
    await cli(['install', '--from', v1, '--disk', fromDir]);
    await cli(['install', ...image(ref1), '--disk', fromImage]);
    expect((await espBytes(fromImage)).equals(await espBytes(fromDir))).toBe(true);
    // Both are the build's disk.raw, partition sizes and all.
    const built = JSON.parse(readFileSync(join(v1, 'build.json'), 'utf8')).artifacts['disk.raw'].sha256;
    for (const d of [fromDir, fromImage]) expect(createHash('sha256').update(readFileSync(d)).digest('hex')).toBe(built);
    expect(await espText(fromImage, 'loader/entries/ossify-a.conf')).toMatch(/^options ossify\.slot=a ossify\.root=ROOT-A .* console=ttyS0 panic=5 loglevel=4$/m);
    await rm(fromDir);
    await rm(fromImage);
  }, 300_000);

  it('1. installs v1.0.0 from the registry, which boots from slot a with the profile\'s kernel arguments on the serial console', async () => {
    const d = disk('main');
    await cli(['install', ...image(ref1), '--disk', d]);
    const r = await boot(d, /OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a/);
    // Userspace reached the serial console (console=ttyS0), and the kernel got the rest of kernel.cmdline.
    expect(cmdlines(r.log)).toHaveLength(1);
    expect(cmdlines(r.log)[0]).toMatch(/(^| )ossify\.slot=a( |$)/);
    expect(cmdlines(r.log)[0]).toMatch(/ console=ttyS0 panic=5 loglevel=4$/);
    const s = await status(d);
    expect(s.next).toBe('a');
    expect(slotOf(s, 'a')).toMatchObject({ bootsNext: true, entry: { state: 'good', file: 'ossify-a.conf' }, release: { name: 'ossify-ab', version: '1.0.0' } });
    afterV1 = disk('after-v1', d);
  }, 300_000);

  it('2. upgrades to v2.0.0 from the registry, which boots from slot b with its kernel arguments and is blessed', async () => {
    const d = disk('main');
    await cli(['upgrade', ...image(ref2), '--disk', d]);
    const before = await status(d);
    expect(slotOf(before, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'trying', triesLeft: 3 }, release: { version: '2.0.0', verified: true, image: ref2 } });
    const r = await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/);
    expect(cmdlines(r.log)).toHaveLength(1);
    expect(cmdlines(r.log)[0]).toMatch(/(^| )ossify\.slot=b .* console=ttyS0 panic=5 loglevel=4$/);
    const s = await status(d);
    expect(s.next).toBe('b');
    expect(slotOf(s, 'b')).toMatchObject({ entry: { state: 'good', file: 'ossify-b.conf', generation: 2 }, release: { version: '2.0.0' } });
    expect(slotOf(s, 'a')).toMatchObject({ entry: { state: 'good' }, release: { version: '1.0.0' } });
    await oracles(d);
    afterV2 = disk('after-v2', d);
  }, 300_000);

  it('3. a broken v3.0.0 from the registry is tried twice (its boot.tries), then v2.0.0 boots again and slot a is bad', async () => {
    const d = disk('main');
    await cli(['upgrade', ...image(ref3), '--disk', d]);
    // The release's own arguments (panic=1), not the running slot's (panic=5).
    expect(await espText(d, 'loader/entries/ossify-a+2.conf')).toMatch(/^options .* console=ttyS0 panic=1 loglevel=4$/m);
    const r = await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/);
    expect(count(r.log, /OSSIFY-BROKEN: init of a broken release/)).toBe(2);
    expect(r.log.indexOf('OSSIFY-BOOT')).toBeGreaterThan(r.log.lastIndexOf('OSSIFY-BROKEN'));
    const s = await status(d);
    expect(s.next).toBe('b');
    expect(slotOf(s, 'a')).toMatchObject({ bootsNext: false, entry: { state: 'bad', triesLeft: 0, triesDone: 2, file: 'ossify-a+0-2.conf' }, release: { version: '3.0.0' } });
    expect(slotOf(s, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'good' }, release: { version: '2.0.0' } });
    const rb = await ossify(['rollback', '--disk', d]);
    expect(rb.exitCode).toBe(2);
    expect(rb.stderr).toMatch(/slot a \(3\.0\.0\) is bad/);
    await oracles(d);
  }, 400_000);

  it('3b. v4.0.0, which boots but whose busybox health hook fails, is never blessed: tried twice, then v2.0.0 boots again', async () => {
    const d = disk('main');
    await cli(['upgrade', ...image(ref4), '--disk', d]);
    expect(slotOf(await status(d), 'a')).toMatchObject({ bootsNext: true, entry: { state: 'trying', triesLeft: 2 }, release: { version: '4.0.0' } });
    const r = await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/);
    expect(count(r.log, /OSSIFY-HEALTH: the site agent is not up/)).toBe(2);
    expect(count(r.log, /ossify: \/usr\/lib\/ossify\/health failed; rebooting unblessed/)).toBe(2);
    expect(r.log).not.toContain('version=4.0.0');
    expect(r.log).not.toContain('blessed slot a');
    const s = await status(d);
    expect(s.next).toBe('b');
    expect(slotOf(s, 'a')).toMatchObject({ bootsNext: false, entry: { state: 'bad', triesLeft: 0, triesDone: 2 }, release: { version: '4.0.0' } });
    expect(slotOf(s, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'good' }, release: { version: '2.0.0' } });
  }, 400_000);

  describe('4. an upgrade killed at any point', () => {
    /** Kills the v1 → v2 upgrade from the registry (or, `fromDir`, the build output) at a step (test hook), checks the disk, boots it if asked, reruns. */
    async function killAt(point: string, bootAfterKill?: RegExp, bootAfterRerun = false, fromDir = false) {
      const d = disk(`kill-${point.replace(/:/g, '-')}`, afterV1);
      const source = fromDir ? ['--from', v2] : image(ref2);
      const r = await ossify(['upgrade', ...source, '--disk', d], { env: { [CRASH_ENV]: point, ...tmpEnv() } });
      expect(r.signal, r.stderr).toBe('SIGKILL');
      const s = await status(d);
      expect(s.next).toBe(point === 'end' ? 'b' : 'a');
      expect(slotOf(s, 'a')).toMatchObject({ entry: { state: 'good' }, release: { version: '1.0.0' } });
      expect(run('sgdisk', ['-v', d]).stdout).toMatch(/No problems found/);
      if (bootAfterKill) await boot(d, bootAfterKill);
      const again = JSON.parse((await cli(['upgrade', ...source, '--disk', d, '--json'])).stdout);
      expect(again).toMatchObject({ slot: 'b', alreadyInstalled: point === 'end' });
      await oracles(d);
      if (bootAfterRerun) await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/);
      expect(slotOf(await status(d), 'b')).toMatchObject({ bootsNext: true, release: { version: '2.0.0', verified: true } });
    }

    it('half-way through writing the root: v1 boots; the rerun boots v2', () => killAt('write-root:524288', /OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a/, true), 400_000);
    it('just before the switch (--from the build output): v1 boots', () => killAt('switch', /OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a/, false, true), 300_000);
    it('just after the switch: v2 boots on trial, the rerun has nothing left to do', () => killAt('end', /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/), 300_000);

    // Every step boundary is killed in test/installer/installer.test.ts with small synthetic releases; these are the real ones.
    it.each(['retire-entry', 'esp-files:7000000', 'stage-entry'])('at %s: status, fsck.fat and sgdisk agree the previous release boots next', (point) => killAt(point), 120_000);

    it('by an outside SIGKILL at seeded random times', async () => {
      const delays = fc.sample(fc.integer({ min: 300, max: 2500 }), { numRuns: 2, seed: 20240521 });
      for (const [i, ms] of delays.entries()) {
        const d = disk(`sigkill-${i}`, afterV1);
        const child = execa('node', [OSSIFY_BIN, 'upgrade', ...image(ref2), '--disk', d], { cwd: PROJECT_ROOT, reject: false, env: { CI: '1', ...tmpEnv() } });
        const timer = setTimeout(() => child.kill('SIGKILL'), ms);
        const r = await child;
        clearTimeout(timer);
        const s = await status(d);
        // Killed or not, the disk boots v1, or v2 on trial once the switch has happened.
        if (s.next === 'b') expect(slotOf(s, 'b')).toMatchObject({ entry: { state: 'trying', triesLeft: 3 }, release: { version: '2.0.0', verified: true } });
        else expect(slotOf(s, 'a')).toMatchObject({ bootsNext: true, entry: { state: 'good' }, release: { version: '1.0.0' } });
        expect(r.signal === 'SIGKILL' || r.exitCode === 0, `after ${ms} ms: ${r.stderr}`).toBe(true);
        await cli(['upgrade', ...image(ref2), '--disk', d]);
        await oracles(d);
        expect((await status(d)).next).toBe('b');
      }
    }, 300_000);
  });

  it('5. the on-device upgrade, run inside the v1 system from the pulled image\'s payload, gives the offline result', async () => {
    const d = disk('device', afterV1);
    const pulled = join(out, 'pulled-v2');
    await cli(['pull', ref2, '-o', pulled, '--insecure', '--no-progress']);
    const payload = join(out, 'payload-v2.tar');
    await writePayloadDisk(await openReleaseDir(pulled), payload);
    const r = await boot(d, /OSSIFY-BOOT name=ossify-ab version=2\.0\.0 slot=b/, [payload]);
    expect(r.log).toMatch(/OSSIFY-BOOT name=ossify-ab version=1\.0\.0 slot=a[\s\S]*ossify-install: slot a is running; writing ossify-ab 2\.0\.0 to slot b[\s\S]*ossify-install: slot b boots next with 3 tries/);
    expect(r.log).not.toMatch(/no boot record/);
    expect(cmdlines(r.log)[1]).toMatch(/(^| )ossify\.slot=b .* console=ttyS0 panic=5 loglevel=4$/);
    await oracles(d);
    // The offline upgrade also records the image it pulled (the device script cannot know it): the rest is the same.
    const device = await status(d);
    const offline = await status(afterV2);
    const strip = (s: StatusReport) => ({ ...s, disk: undefined, slots: s.slots.map((x) => ({ ...x, release: x.release ? { ...x.release, image: undefined } : undefined })) });
    expect(strip(device)).toEqual(strip(offline));
    const files = ['loader/entries/ossify-a.conf', 'loader/entries/ossify-b.conf', 'loader/loader.conf', 'EFI/BOOT/BOOTX64.EFI', 'ossify/b/vmlinuz', 'ossify/b/initrd.img'];
    expect(await espFiles(d, files)).toEqual(await espFiles(afterV2, files));
    expect(await espText(d, 'ossify/b/release.json')).toBe((await espText(afterV2, 'ossify/b/release.json')).replace(/^  "image": .*\n/m, ''));
  }, 300_000);
});
