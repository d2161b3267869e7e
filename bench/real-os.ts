import { execa } from 'execa';
import { mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RegistryClient } from '../builder/oci/registry.ts';
import { loadProfile } from '../builder/profile/load.ts';
import { debianOsLayer, pushDebianOs } from '../test/helpers/debian-os.ts';
import { startRegistry } from '../test/helpers/registry.ts';
import type { BenchRow } from './types.ts';

/**
 * The container-image OS (profiles/examples/debian-systemd.yaml over the Debian image the
 * real-OS tests make, pushed to a local docker-registry), in one run on this machine:
 *
 * - a cold build (a stage cache of its own; the image's layer and the debs already downloaded)
 *   against `mksquashfs` of the unpacked container alone, with the profile's compressor, level,
 *   block size and all cores: what the rest of the build costs on top of the one big step;
 * - a no-change rebuild against the cold build;
 * - the size of ossify's rootfs.squashfs against `mksquashfs` of the same tree (ossify's image
 *   unpacked with `unsquashfs`, so both hold exactly the same files).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'ossify.js');
const INPUTS = join(ROOT, 'out', 'cache');
const EXAMPLE = join(ROOT, 'profiles', 'examples', 'debian-systemd.yaml');

async function timed(cmd: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  const r = await execa(cmd, args, { reject: false, env: { CI: '1' } });
  if (r.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.exitCode}):\n${String(r.stderr).slice(-3000)}`);
  return (performance.now() - t0) / 1000;
}

export async function benchRealOs(): Promise<BenchRow[]> {
  const layer = await debianOsLayer(INPUTS);
  const work = mkdtempSync(join(tmpdir(), 'ossify-bench-real-os-'));
  const reg = await startRegistry();
  try {
    const client = await RegistryClient.create(reg.host, { insecure: true, credentials: null });
    const ref = `${reg.host}/base/debian-systemd@${await pushDebianOs(client, 'base/debian-systemd', layer)}`;
    await client.close();
    const profile = join(work, 'os.yaml');
    writeFileSync(profile, `extends: ${EXAMPLE}\nrootfs:\n  inputs:\n    - oci: ${ref}\n      insecure: true\n    - dir: ${join(ROOT, 'overlays', 'real-os')}\n`);
    const s = (await loadProfile(profile)).profile.rootfs.squashfs;

    // The stage cache is this run's own; downloaded inputs (debs, image blobs) are the shared ones.
    const cache = join(work, 'cache');
    mkdirSync(cache);
    for (const d of ['blobs', 'deb', 'tmp']) {
      mkdirSync(join(INPUTS, d), { recursive: true });
      symlinkSync(join(INPUTS, d), join(cache, d));
    }
    const out = join(work, 'out');
    const build = () => timed('node', [BIN, 'build', profile, '--out', out, '--cache-dir', cache, '--json']);
    const cold = await build();
    const again = await build();

    const built = join(out, 'debian-systemd-1.0.0', 'rootfs.squashfs');
    const unpacked = join(work, 'container');
    await timed('tar', ['-xf', layer.tarPath, '-C', (mkdirSync(unpacked), unpacked), '--xattrs', '--numeric-owner']);
    const comp = ['-comp', s.compression, ...(s.level !== undefined ? ['-Xcompression-level', String(s.level)] : []), '-b', String(s.blockSize), '-processors', String(cpus().length), '-noappend', '-quiet'];
    const peerBuild = await timed('mksquashfs', [unpacked, join(work, 'container.squashfs'), ...comp]);

    const same = join(work, 'same');
    await timed('unsquashfs', ['-d', same, '-q', built]);
    await timed('mksquashfs', [same, join(work, 'same.squashfs'), ...comp]);
    const ours = statSync(built).size;
    const theirs = statSync(join(work, 'same.squashfs')).size;
    return [
      { name: 'container-image OS: cold build / mksquashfs of the unpacked container', ours: cold, theirs: peerBuild, ratio: cold / peerBuild, unit: 's' },
      { name: 'container-image OS: no-change rebuild / cold build', ours: again, theirs: cold, ratio: again / cold, unit: 's' },
      { name: `container-image OS: rootfs.squashfs size / mksquashfs of the same tree (${s.compression}-${s.level ?? 'default'})`, ours: ours / 2 ** 20, theirs: theirs / 2 ** 20, ratio: ours / theirs, unit: 'MiB' },
    ];
  } finally {
    await reg.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
