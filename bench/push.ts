import { execa } from 'execa';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildInstallerImage } from '../builder/release/installer-image.ts';
import { pushLayout } from '../builder/oci/push.ts';
import { makeBuildOutput, startRegistry, hostBusybox } from '../test/helpers/registry.ts';
import type { BenchRow } from './types.ts';

/**
 * Push throughput to a local docker-registry next to `skopeo copy` of the same OCI layout
 * (with --preserve-digests, so skopeo neither recompresses the payload nor changes a digest).
 * Each measurement gets a fresh registry, so nothing is already there; the best of three runs
 * counts. A second row times a push of an image the registry already holds (no blob bytes).
 */
export async function benchPush(opts: { rootfsMiB?: number; rounds?: number } = {}): Promise<BenchRow[]> {
  const rootfsMiB = opts.rootfsMiB ?? Number(process.env.OSSIFY_BENCH_PUSH_MIB ?? 256);
  const rounds = opts.rounds ?? 3;
  const root = mkdtempSync(join(tmpdir(), 'ossify-bench-push-'));
  try {
    const build = makeBuildOutput(root, { rootfsSize: rootfsMiB << 20, seed: 99 });
    const img = await buildInstallerImage(build.dir, { busybox: hostBusybox() });
    const m = JSON.parse(readFileSync(join(img.layoutDir, 'blobs', 'sha256', img.manifestDigest.slice(7)), 'utf8')) as { config: { size: number }; layers: { size: number }[] };
    const bytes = m.config.size + m.layers.reduce((a, l) => a + l.size, 0);
    const MiB = bytes / (1 << 20);

    const ours: number[] = [];
    const theirs: number[] = [];
    const oursNoop: number[] = [];
    const theirsNoop: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const reg = await startRegistry();
      try {
        const ref = `${reg.host}/bench/ours:v1`;
        let t = performance.now();
        const r = await pushLayout(img.layoutDir, ref, { insecure: true, blobCache: false, credentials: null });
        ours.push((performance.now() - t) / 1000);
        if (r.digest !== img.manifestDigest) throw new Error(`ossify pushed ${r.digest}, expected ${img.manifestDigest}`);
        t = performance.now();
        const again = await pushLayout(img.layoutDir, ref, { insecure: true, blobCache: false, credentials: null });
        oursNoop.push(performance.now() - t);
        if (again.stats.blobBytesSent !== 0) throw new Error('a repeated push uploaded blob bytes');
      } finally {
        await reg.stop();
      }
      const reg2 = await startRegistry();
      try {
        const dest = `docker://${reg2.host}/bench/skopeo:v1`;
        const args = ['copy', '--quiet', '--preserve-digests', '--dest-tls-verify=false', `oci:${img.layoutDir}:${build.buildJson.version}`, dest];
        let t = performance.now();
        await execa('skopeo', args);
        theirs.push((performance.now() - t) / 1000);
        t = performance.now();
        await execa('skopeo', args);
        theirsNoop.push(performance.now() - t);
        const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', dest], { encoding: 'buffer' });
        const { createHash } = await import('node:crypto');
        if (`sha256:${createHash('sha256').update(raw.stdout).digest('hex')}` !== img.manifestDigest) throw new Error('skopeo pushed a different manifest');
      } finally {
        await reg2.stop();
      }
    }
    const best = (xs: number[]) => Math.min(...xs);
    const oursRate = MiB / best(ours);
    const theirsRate = MiB / best(theirs);
    return [
      // Time ratio, like every other row: below 1.0 means ossify pushes faster.
      { name: `push ${MiB.toFixed(0)} MiB image to empty registry (s)`, ours: best(ours), theirs: best(theirs), ratio: best(ours) / best(theirs), unit: 's' },
      { name: 'push throughput (MiB/s, ratio = time ratio above)', ours: oursRate, theirs: theirsRate, ratio: best(ours) / best(theirs), unit: 'MiB/s' },
      { name: 'push of an image the registry holds (ms)', ours: best(oursNoop), theirs: best(theirsNoop), ratio: best(oursNoop) / best(theirsNoop), unit: 'ms' },
    ];
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
