import { join } from 'node:path';
import { SBOM_FILE, addSbomToRootfs } from '../trust/sbom.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { packageInfo } from '../util/package-info.ts';
import { baseDigestOf, dedupeSources } from './shared.ts';
import { defineStep } from './step.ts';

/** trust: the SPDX SBOM of the finished rootfs goes into it and beside the outputs. */
export const sbom = defineStep({
  name: 'sbom',
  version: 1,
  reads: ['arch', 'name', 'version', '$baseDigest', '$epoch', '$sources'],
  needs: ['rootfs'],
  makes: ['rootfs'],
  heavy: ['rootfs'],
  writes: [SBOM_FILE],
  async run({ rootfs }, env) {
    const p = env.profile;
    const bytes = await addSbomToRootfs(rootfs, {
      name: p.name,
      version: p.version,
      arch: p.arch,
      profileDigest: baseDigestOf(env.loaded), // fleet: shared by every site of a base
      epoch: env.loaded.epoch,
      builderVersion: packageInfo().version,
      sources: dedupeSources(env.sourcesBefore),
    });
    await writeFileAtomic(join(env.work, SBOM_FILE), bytes);
    env.log(`${bytes.length} bytes`);
    return { rootfs };
  },
});
