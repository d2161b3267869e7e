import { inputOrigin } from '../inputs/index.ts';
import { applyTree } from '../inputs/apply.ts';
import { programsTree } from '../elf/index.ts';
import type { LoadedProfile } from '../profile/load.ts';
import { applyTestNondeterminism } from '../reproducible.ts';
import { checkRootInit, type RootfsLayer } from '../rootfs/init-check.ts';
import { addOsIntegration, osReleaseText } from '../rootfs/os.ts';
import { textContent } from '../tree/content.ts';
import { FileTree } from '../tree/tree.ts';
import { baseDigestOf } from './shared.ts';
import { defineStep } from './step.ts';

/** Directories every root needs as mount points, even when no input provides them. */
const ROOT_SKELETON = ['dev', 'proc', 'sys', 'run', 'tmp', 'mnt'];

/** The root file tree: the inputs and programs layered in order, os-release, a full OS's integration, normalised. */
export const rootfsTree = defineStep({
  name: 'rootfs tree',
  version: 1,
  // real OS: rootfs.os and boot.health shape what addOsIntegration adds.
  reads: ['arch', 'name', 'version', 'rootfs.inputs', 'rootfs.programs', 'rootfs.allRoot', 'rootfs.os', 'boot.health', 'boot.healthTimeout', '$baseDigest', '$epoch'],
  needs: [],
  makes: ['rootfs'],
  heavy: ['rootfs'],
  fetches: true,
  async run(_, env) {
    const p = env.profile;
    const root = new FileTree();
    const layers: RootfsLayer[] = [];
    // loadInput already placed each input under its target; applyTree keeps earlier inputs' directory symlinks.
    for (const input of p.rootfs.inputs) {
      const layer = { origin: inputOrigin(input), tree: await env.fetch(input) };
      applyTree(root, layer.tree, layer.origin);
      layers.push(layer);
    }
    if (p.rootfs.programs?.length) {
      const layer = { origin: 'rootfs.programs', tree: (await programsTree(p.rootfs.programs, 'rootfs.programs', (i) => env.fetch(i))).tree };
      applyTree(root, layer.tree, layer.origin);
      layers.push(layer);
    }
    for (const d of ROOT_SKELETON) root.ensureDir(d);
    // real OS: a full OS keeps its own os-release (ID=debian, …) with the image's identity added.
    const osRel = p.rootfs.os ? await osReleaseText(root, osRelease(env.loaded), { id: p.name, version: p.version, digest: baseDigestOf(env.loaded) }) : osRelease(env.loaded);
    root.delete('etc/os-release');
    root.set('etc/os-release', { type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, content: textContent(osRel) });
    addOsIntegration(root, p);
    await checkRootInit(root, layers, p.arch);
    applyTestNondeterminism(root); // trust: test hook, a no-op unless OSSIFY_TEST_NONDETERMINISM=1
    root.normalise({ epoch: env.loaded.epoch, allRoot: p.rootfs.allRoot });
    env.log(`${root.size} entries`);
    return { rootfs: root };
  },
});

function osRelease(p: LoadedProfile): string {
  const { name, version } = p.profile;
  return [
    `NAME=${JSON.stringify(name)}`,
    'ID=ossify',
    `IMAGE_ID=${name}`,
    `IMAGE_VERSION=${version}`,
    `VERSION=${JSON.stringify(version)}`,
    // fleet: the base digest, so every site of one base has the same rootfs (equal to the digest without site data).
    `OSSIFY_PROFILE_DIGEST=${baseDigestOf(p)}`,
    '',
  ].join('\n');
}
