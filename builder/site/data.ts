import { open } from 'node:fs/promises';
import { loadFilesInput } from '../inputs/files-input.ts';
import { treeFromDir } from '../inputs/dir.ts';
import type { SiteSettings } from '../profile/schema.ts';
import { writeTar, type TarEntry } from '../formats/tar.ts';
import { readContent, textContent } from '../tree/content.ts';
import { FileTree, type Meta } from '../tree/tree.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { STATE_SEED_AREA } from '../disk/layout.ts';

/**
 * A site's data (profile `site:`) as the small tree the fleet puts on each site's disk: files
 * under etc/ only, laid over a tmpfs copy of /etc by the rootfs init at boot. The OS images
 * never contain any of it, so every site of one base shares them byte for byte.
 *
 *   etc/ossify/site.env        SITE_NAME, SITE_HOSTNAME and `env:` as shell assignments
 *   etc/hostname, etc/hosts    from `hostname`
 *   etc/network/interfaces     from `network` (ifupdown syntax, as busybox ifup reads it)
 *   etc/resolv.conf            from `network.dns`
 *   etc/systemd/network/…      from `network`, for a systemd rootfs (rootfs.os)
 *   etc/ssl/certs/<name>.pem   from `certificates`
 *   …                          then `overlay:` (a directory's etc/ tree), then `files:`
 */

export const SITE_ENV_PATH = 'etc/ossify/site.env';
/** The partition whose first bytes hold the seed (a plain tar: its end is marked by zero blocks). */
export const SITE_SEED_PARTITION = 'STATE';

const shellQuote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;

function netmask(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.');
}

function interfaces(n: NonNullable<SiteSettings['network']>): string {
  const lines = ['auto lo', 'iface lo inet loopback', '', `auto ${n.interface}`];
  if (n.dhcp) lines.push(`iface ${n.interface} inet dhcp`);
  else {
    const [addr, prefix] = n.address!.split('/') as [string, string];
    lines.push(`iface ${n.interface} inet static`, `\taddress ${addr}`, `\tnetmask ${netmask(Number(prefix))}`);
    if (n.gateway) lines.push(`\tgateway ${n.gateway}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Checks what the schema cannot say per field; errors name the profile key. */
export function checkSite(site: SiteSettings): void {
  const n = site.network;
  if (n) {
    if (n.dhcp && n.address) throw new InputError('site.network: give dhcp: true or an address, not both');
    if (!n.dhcp && !n.address) throw new InputError('site.network: no dhcp: true and no address', { hint: 'add dhcp: true, or address: 192.0.2.10/24 (and gateway:)' });
    if (n.dhcp && n.gateway) throw new InputError('site.network.gateway only applies to a static address', { hint: 'remove gateway:, or replace dhcp: true by address:' });
  }
  for (const [i, f] of (site.files ?? []).entries()) {
    if (!underEtc(f.path)) throw new InputError(`site.files[${i}]: ${JSON.stringify(f.path)} is not under etc/`, { hint: 'site data is applied over /etc; put other files in the base profile (rootfs.inputs)' });
  }
  const names = new Set<string>();
  for (const [i, c] of (site.certificates ?? []).entries()) {
    if (names.has(c.name)) throw new InputError(`site.certificates[${i}]: a second certificate named ${c.name}`);
    names.add(c.name);
  }
}

function underEtc(path: string): boolean {
  const p = path.replace(/^\/+/, '');
  return p === 'etc' || p.startsWith('etc/');
}

const PEM = /-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/;

/** The same network as a systemd-networkd .network file, for a systemd rootfs (rootfs.os). */
function networkdFile(n: NonNullable<SiteSettings['network']>): string {
  const lines = ['[Match]', `Name=${n.interface}`, '', '[Network]'];
  if (n.dhcp) lines.push('DHCP=yes');
  else {
    lines.push(`Address=${n.address}`);
    if (n.gateway) lines.push(`Gateway=${n.gateway}`);
  }
  for (const d of n.dns ?? []) lines.push(`DNS=${d}`);
  return `${lines.join('\n')}\n`;
}

export const NETWORKD_SITE_FILE = 'etc/systemd/network/10-ossify-site.network';

/**
 * The site's files as a tree (root-owned, every time `epoch`). Local files are read here.
 * `networkd`: the rootfs is a systemd OS, so the network also goes into NETWORKD_SITE_FILE.
 */
export async function siteTree(site: SiteSettings, epoch: number, opts: { networkd?: boolean } = {}): Promise<FileTree> {
  checkSite(site);
  const dirMeta: Meta = { mode: 0o755, uid: 0, gid: 0, mtime: epoch };
  const tree = new FileTree(dirMeta);
  const file = (path: string, text: string, mode = 0o644) => {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) tree.ensureDir(parts.slice(0, i).join('/'), dirMeta);
    tree.set(path, { type: 'file', mode, uid: 0, gid: 0, mtime: epoch, content: textContent(text, `site ${path}`) });
  };
  const env = [`SITE_NAME=${shellQuote(site.name)}`, `SITE_HOSTNAME=${shellQuote(site.hostname ?? '')}`];
  for (const k of Object.keys(site.env ?? {}).sort()) env.push(`${k}=${shellQuote(site.env![k]!)}`);
  file(SITE_ENV_PATH, `${env.join('\n')}\n`);
  if (site.hostname) {
    file('etc/hostname', `${site.hostname}\n`);
    const short = site.hostname.split('.')[0]!;
    file('etc/hosts', `127.0.0.1\tlocalhost\n127.0.1.1\t${site.hostname}${short !== site.hostname ? ` ${short}` : ''}\n`);
  }
  if (site.network) {
    file('etc/network/interfaces', interfaces(site.network));
    if (site.network.dns?.length) file('etc/resolv.conf', site.network.dns.map((d) => `nameserver ${d}\n`).join(''));
    if (opts.networkd) file(NETWORKD_SITE_FILE, networkdFile(site.network));
  }
  for (const [i, c] of (site.certificates ?? []).entries()) {
    let text: string;
    if ('content' in c) text = c.content;
    else {
      const fh = await open(c.source, 'r').catch((err: NodeJS.ErrnoException) => {
        throw new InputError(`site.certificates[${i}]: cannot read ${c.source}: ${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)}`);
      });
      try {
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    }
    if (!PEM.test(text)) throw new InputError(`site.certificates[${i}] (${c.name}) is not a PEM certificate`, { hint: 'expected a -----BEGIN CERTIFICATE----- block' });
    file(`etc/ssl/certs/${c.name}.pem`, text.endsWith('\n') ? text : `${text}\n`);
  }
  if (site.overlay !== undefined) {
    const over = await treeFromDir(site.overlay, { origin: `site.overlay ${site.overlay}` });
    for (const [p, e] of over.walk()) {
      if (p === '') continue;
      if (!underEtc(p)) throw new InputError(`site.overlay: ${site.overlay}/${p} is not under etc/`, { hint: 'a site overlay holds an etc/ directory only: site data is applied over /etc' });
      tree.set(p, e.type === 'hardlink' ? e : { ...e, mtime: epoch });
    }
  }
  if (site.files?.length) {
    const { tree: files } = await loadFilesInput({ files: site.files }, 'site.files');
    for (const [p, e] of files.walk()) if (p !== '') tree.set(p, e.type === 'hardlink' ? e : { ...e, mtime: epoch });
  }
  return tree;
}

/** The tree as a deterministic tar (sorted, one mtime, root-owned); hard links become copies. */
export async function siteTar(tree: FileTree, epoch: number): Promise<Uint8Array> {
  const entries: TarEntry[] = [];
  for (const [p, e] of tree.walk()) {
    if (p === '') continue;
    const r = e.type === 'hardlink' ? tree.resolve(p) : e;
    if (!r) throw new InputError(`site data: hard link ${p} points nowhere`);
    if (r.type === 'dir') entries.push({ type: 'dir', path: p, mode: r.mode });
    else if (r.type === 'file') entries.push({ type: 'file', path: p, mode: r.mode, content: r.content });
    else if (r.type === 'symlink') entries.push({ type: 'symlink', path: p, target: r.target });
    else throw new InputError(`site data: ${p} is a ${r.type}; site data holds files, directories and symlinks only`);
  }
  const parts: Uint8Array[] = [];
  for await (const c of writeTar(entries, { mtime: epoch })) parts.push(c);
  return Buffer.concat(parts);
}

/** Writes the seed at the start of the STATE partition of a disk image the pipeline just assembled. */
export async function writeSiteSeed(disk: string, partitions: readonly { label: string; offset: number; size: number }[], seed: Uint8Array): Promise<void> {
  const part = partitions.find((p) => p.label === SITE_SEED_PARTITION);
  if (!part) throw new OssifyError(`the disk layout has no ${SITE_SEED_PARTITION} partition for the site seed`);
  const room = seedRoom(part.size);
  if (seed.length > room) {
    throw new InputError(`the site data (${seed.length} bytes) does not fit the seed area at the start of the ${SITE_SEED_PARTITION} partition (${room} bytes)`, {
      hint: room < STATE_SEED_AREA ? 'raise disk.state, or make the site data smaller' : 'make the site data smaller: it is a seed for /etc (hostname, network, certificates), not a data volume',
    });
  }
  const fh = await open(disk, 'r+');
  try {
    let done = 0;
    while (done < seed.length) done += (await fh.write(seed, done, seed.length - done, part.offset + done)).bytesWritten;
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The seed on a STATE partition, as the installers read and replace it (builder/installer/site-seed.ts).

const TAR_BLOCK = 512;
const USTAR_MAGIC = 'ustar';

/** The most seed bytes a STATE partition of `stateSize` bytes takes. */
export function seedRoom(stateSize: number): number {
  return Math.min(stateSize, STATE_SEED_AREA);
}

/**
 * The first block of STATE while a new seed goes in: no `ustar` magic at byte 257, so neither
 * the rootfs init nor a tar reader takes the half-written bytes behind it for a seed, and the
 * installers know the block as their own (a rerun replaces it; anything else unknown is refused).
 */
export const SEED_PENDING_MARKER = 'OSSIFY-SITE-SEED-PENDING\n';

export function seedPendingBlock(): Uint8Array {
  const b = new Uint8Array(TAR_BLOCK);
  b.set(new TextEncoder().encode(SEED_PENDING_MARKER));
  return b;
}

/** Whether a block is a tar header the rootfs init accepts as the start of a seed (it checks the magic only). */
export function isSeedHeader(block: Uint8Array): boolean {
  return block.length >= 262 && new TextDecoder().decode(block.subarray(257, 262)) === USTAR_MAGIC;
}

/** Why `seed` cannot be a seed (a whole number of blocks, a ustar header first, two zero blocks last), or undefined. */
export function seedProblem(seed: Uint8Array): string | undefined {
  if (seed.length < 3 * TAR_BLOCK || seed.length % TAR_BLOCK !== 0) return `it is ${seed.length} bytes, not a tar archive of whole 512-byte blocks`;
  if (!isSeedHeader(seed)) return 'it does not start with a ustar header';
  if (!seed.subarray(seed.length - 2 * TAR_BLOCK).every((b) => b === 0)) return 'it does not end with the two zero blocks that end a tar archive';
  return undefined;
}

/**
 * What the start of a STATE partition holds: a seed (the init applies it), a seed being
 * replaced (SEED_PENDING_MARKER), nothing (`head`, the first STATE_SEED_AREA or all of a
 * smaller partition, is zeros), or data ossify did not write (the installers refuse to
 * overwrite it).
 */
export type StateSeedKind = 'seed' | 'pending' | 'empty' | 'other';

export function stateSeedKind(head: Uint8Array): StateSeedKind {
  if (isSeedHeader(head)) return 'seed';
  const marker = new TextEncoder().encode(SEED_PENDING_MARKER);
  if (head.length >= TAR_BLOCK && marker.every((b, i) => head[i] === b) && head.subarray(marker.length, TAR_BLOCK).every((b) => b === 0)) return 'pending';
  return head.every((b) => b === 0) ? 'empty' : 'other';
}

/** SITE_NAME from a seed's etc/ossify/site.env line (as siteTree writes it), if it has one. */
export function siteNameOfEnv(env: string): string | undefined {
  const m = /^SITE_NAME='((?:[^']|'\\'')*)'$/m.exec(env);
  return m ? m[1]!.replace(/'\\''/g, "'") : undefined;
}

/** For tests and `ossify inspect`-like tools: the text of one file of a site tree. */
export async function siteFileText(tree: FileTree, path: string): Promise<string | undefined> {
  const e = tree.resolve(path);
  return e?.type === 'file' ? new TextDecoder().decode(await readContent(e.content)) : undefined;
}
