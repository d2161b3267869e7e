import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { createGzip } from 'node:zlib';
import { execa } from 'execa';
import type { RegistryClient } from '../../builder/oci/registry.ts';
import { requireTool } from './oracle.ts';
import { pushLayers } from './oci-images.ts';

/**
 * The container-image OS of the real-OS tests and benchmark: Debian (the machine's own suite
 * and apt sources) with systemd as init, udev, systemd-boot's systemd-bless-boot and
 * containerd, made by mmdebstrap as one tar and pushed as a one-layer OCI image. Building it
 * takes minutes, so the gzipped layer is kept in `<cache>/debian-os/`, keyed by everything
 * that decides its content (package list, options, apt sources): CI pays once.
 */

export const DEBIAN_OS_PACKAGES = ['systemd', 'systemd-sysv', 'systemd-boot', 'udev', 'containerd'];

const MMDEBSTRAP_OPTIONS = [
  '--variant=minbase',
  '--aptopt=APT::Install-Recommends "false"',
  // merged /usr by a hook, not by the usrmerge package (which would pull in perl)
  '--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr',
  ...['doc', 'man', 'locale', 'info'].map((d) => `--dpkgopt=path-exclude=/usr/share/${d}/*`),
];

export interface DebianOsLayer {
  /** The gzipped layer. */
  gzPath: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** The uncompressed tar, kept for the benchmark's mksquashfs baseline. */
  tarPath: string;
}

function aptSources(): { suite: string; files: string[] } {
  const osRelease = readFileSync('/etc/os-release', 'utf8');
  const suite = /^VERSION_CODENAME=(.+)$/m.exec(osRelease)?.[1]?.trim();
  if (!suite) throw new Error('/etc/os-release has no VERSION_CODENAME: cannot tell which Debian suite to bootstrap');
  const files: string[] = [];
  if (existsSync('/etc/apt/sources.list') && readFileSync('/etc/apt/sources.list', 'utf8').replace(/#.*$/gm, '').trim()) files.push('/etc/apt/sources.list');
  if (existsSync('/etc/apt/sources.list.d')) {
    for (const f of readdirSync('/etc/apt/sources.list.d').sort()) if (f.endsWith('.list') || f.endsWith('.sources')) files.push(join('/etc/apt/sources.list.d', f));
  }
  if (!files.length) throw new Error('no apt sources on this machine (/etc/apt/sources.list{,.d}): mmdebstrap needs a Debian mirror');
  return { suite, files };
}

/** Builds (or finds in the cache) the Debian OS layer. */
export async function debianOsLayer(cacheDir: string, packages = DEBIAN_OS_PACKAGES): Promise<DebianOsLayer> {
  requireTool('mmdebstrap', 'mmdebstrap');
  const { suite, files } = aptSources();
  const key = createHash('sha256')
    .update(JSON.stringify({ suite, packages, options: MMDEBSTRAP_OPTIONS, sources: files.map((f) => readFileSync(f, 'utf8')) }))
    .digest('hex')
    .slice(0, 16);
  const dir = join(cacheDir, 'debian-os');
  const base = join(dir, `${suite}-${key}`);
  const meta = `${base}.json`;
  if (existsSync(meta) && existsSync(`${base}.tar.gz`) && existsSync(`${base}.tar`)) {
    return { gzPath: `${base}.tar.gz`, tarPath: `${base}.tar`, diffId: JSON.parse(await readFile(meta, 'utf8')).diffId };
  }
  await mkdir(dir, { recursive: true });
  const tmp = `${base}.tmp`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);
  try {
    const mode = process.getuid?.() === 0 ? 'root' : 'unshare';
    const tar = join(tmp, 'os.tar');
    const r = await execa('mmdebstrap', [`--mode=${mode}`, ...MMDEBSTRAP_OPTIONS, `--include=${packages.join(',')}`, '--format=tar', suite, tar, ...files], {
      reject: false,
      stdin: 'ignore',
      env: { SOURCE_DATE_EPOCH: '1700000000' },
    });
    if (r.exitCode !== 0) throw new Error(`mmdebstrap failed (exit ${r.exitCode}):\n${String(r.stderr).slice(-4000)}`);
    const hash = createHash('sha256');
    const tap = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    await pipeline(createReadStream(tar), tap, createGzip({ level: 6 }), createWriteStream(join(tmp, 'os.tar.gz')));
    const diffId = `sha256:${hash.digest('hex')}`;
    await rename(join(tmp, 'os.tar.gz'), `${base}.tar.gz`);
    await rename(tar, `${base}.tar`);
    await writeFile(meta, `${JSON.stringify({ suite, packages, diffId })}\n`);
    return { gzPath: `${base}.tar.gz`, tarPath: `${base}.tar`, diffId };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Pushes the Debian OS as `repo` (one layer); returns the manifest digest. */
export async function pushDebianOs(client: RegistryClient, repo: string, layer: DebianOsLayer): Promise<string> {
  return (await pushLayers(client, repo, [{ gz: await readFile(layer.gzPath), diffId: layer.diffId }])).digest;
}
