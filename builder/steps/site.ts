import { join } from 'node:path';
import { siteTar, siteTree } from '../site/data.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { SITE_SEED } from '../release/artifacts.ts';
import { defineStep } from './step.ts';

/** fleet: the site's data as a small tar (a systemd-networkd file too when the root runs systemd). */
export const site = defineStep({
  name: 'site',
  version: 1,
  applies: (p) => p.site !== undefined,
  reads: ['site', 'rootfs.os.init', '$epoch'],
  needs: [],
  makes: [],
  writes: [SITE_SEED],
  async run(_, env) {
    const s = env.profile.site;
    if (!s) return {};
    const tar = await siteTar(await siteTree(s, env.loaded.epoch, { networkd: env.profile.rootfs.os?.init === 'systemd' }), env.loaded.epoch);
    await writeFileAtomic(join(env.work, SITE_SEED), tar);
    env.log(`site ${s.name}: ${tar.length} bytes`);
    return {};
  },
});
