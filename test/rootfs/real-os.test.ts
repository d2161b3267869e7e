import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tarStream from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArchive } from '../../builder/inputs/archive.ts';
import { RegistryClient } from '../../builder/oci/registry.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import { Profile } from '../../builder/profile/schema.ts';
import { checkRootInit } from '../../builder/rootfs/init-check.ts';
import { addOsIntegration, osReleaseText, ROOTFS_ENV } from '../../builder/rootfs/os.ts';
import { NETWORKD_SITE_FILE, siteTree } from '../../builder/site/data.ts';
import { bytesContent, readContent, textContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { pushImage } from '../helpers/oci-images.ts';
import { requireTool, run } from '../helpers/oracle.ts';
import { startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * A full OS as the root (rootfs.os): what ossify adds to it, the init check every build makes,
 * and oci: roots without a usable init failing the build. The boots are test/e2e/real-os.test.ts.
 */

const EXAMPLE = join(PROJECT_ROOT, 'profiles/examples/debian-systemd.yaml');
const text = async (t: FileTree, p: string) => {
  const e = t.resolve(p);
  if (e?.type !== 'file') throw new Error(`${p} is ${e?.type ?? 'missing'}`);
  return new TextDecoder().decode(await readContent(e.content));
};
const file = (t: FileTree, p: string, s: string | Uint8Array, mode = 0o644) =>
  t.set(p, { type: 'file', mode, uid: 0, gid: 0, mtime: 0, content: typeof s === 'string' ? textContent(s) : bytesContent(s, p) });
const link = (t: FileTree, p: string, target: string) => t.set(p, { type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: 0, target });

/** A merged-/usr tree like Debian's, whose /sbin/init is `init` (a symlink chain to systemd). */
function debianLike(systemd: Uint8Array): FileTree {
  const t = new FileTree();
  link(t, 'sbin', 'usr/sbin');
  link(t, 'lib', 'usr/lib');
  link(t, 'usr/sbin/init', '../lib/systemd/systemd');
  file(t, 'usr/lib/systemd/systemd', systemd, 0o755);
  file(t, 'usr/lib/os-release', 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n');
  link(t, 'etc/os-release', '../usr/lib/os-release');
  return t;
}

const hostElf = () => new Uint8Array(readFileSync('/bin/busybox'));
/** The same program with e_machine patched to aarch64 (183): an init for another arch. */
function aarch64Elf(): Uint8Array {
  const b = hostElf();
  new DataView(b.buffer, b.byteOffset).setUint16(18, 183, true);
  return b;
}

describe('the rootfs init check', () => {
  it('follows merged-/usr symlinks to an ELF of the profile\'s arch, and a #! script to its interpreter', async () => {
    await checkRootInit(debianLike(hostElf()), [], 'x86_64');
    const t = new FileTree();
    file(t, 'bin/busybox', hostElf(), 0o755);
    file(t, 'sbin/init', '#!/bin/busybox sh\necho hi\n', 0o755);
    await checkRootInit(t, [], 'x86_64');
  });

  it('names the input and what is missing or wrong', async () => {
    const empty = new FileTree();
    file(empty, 'etc/hostname', 'x\n');
    await expect(checkRootInit(empty, [{ origin: 'oci:r/x@sha256:ab', tree: empty }], 'x86_64')).rejects.toThrow(/^the rootfs has no \/sbin\/init: it is missing or a dangling symlink in rootfs.inputs \(oci:r\/x@sha256:ab\)$/);
    const arm = debianLike(aarch64Elf());
    await expect(checkRootInit(arm, [{ origin: 'oci:r/arm@sha256:cd', tree: arm }], 'x86_64')).rejects.toThrow(
      "oci:r/arm@sha256:cd: /sbin/init (/usr/lib/systemd/systemd) is built for aarch64, but the profile's arch is x86_64",
    );
    const script = new FileTree();
    file(script, 'sbin/init', '#!/bin/bash\n', 0o755);
    await expect(checkRootInit(script, [{ origin: 'dir:overlay', tree: script }], 'x86_64')).rejects.toThrow('dir:overlay: /sbin/init is a script for /bin/bash, which is not in the rootfs');
  });
});

describe('rootfs.os: what ossify adds to a full OS', () => {
  it('keeps the image\'s os-release and adds IMAGE_ID and IMAGE_VERSION', async () => {
    const t = debianLike(hostElf());
    const rel = await osReleaseText(t, 'NAME=ossify\n', { id: 'edge', version: '2.1.0', digest: 'sha256:00' });
    expect(rel).toBe('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\nIMAGE_ID=edge\nIMAGE_VERSION=2.1.0\nOSSIFY_PROFILE_DIGEST=sha256:00\n');
    expect(await osReleaseText(new FileTree(), 'NAME=ossify\n', { id: 'x', version: '1', digest: 'd' })).toBe('NAME=ossify\n');
  });

  it('adds rootfs.env, an empty machine-id, the ESP mount and the health gate, and nothing else', async () => {
    const { profile } = await loadProfile(EXAMPLE);
    const t = debianLike(hostElf());
    const before = new Set(t.paths());
    addOsIntegration(t, profile);
    const added = t.paths().filter((p) => !before.has(p) && t.get(p)?.type !== 'dir');
    expect(added.sort()).toEqual(
      [
        'etc/machine-id',
        'usr/lib/ossify/health-check',
        'usr/lib/ossify/rootfs.env',
        'usr/lib/systemd/system/boot-complete.target.d/ossify.conf',
        'usr/lib/systemd/system/efi.mount',
        'usr/lib/systemd/system/ossify-health.service',
        'usr/lib/systemd/system/systemd-bless-boot.service.d/ossify.conf',
      ].sort(),
    );
    expect(await text(t, 'etc/machine-id')).toBe('');
    // /var on STATE starts behind the 1 MiB seed area.
    expect(await text(t, ROOTFS_ENV)).toMatch(/^OSSIFY_ETC=overlay\nOSSIFY_VAR=state\nOSSIFY_VAR_OFFSET=1048576\n$/m);
    const health = await text(t, 'usr/lib/systemd/system/ossify-health.service');
    expect(health).toMatch(/^Wants=containerd\.service$/m);
    expect(health).toMatch(/^After=containerd\.service$/m);
    expect(health).toMatch(/^JobTimeoutSec=600$/m);
    expect(health).toMatch(/^FailureAction=reboot$/m);
    expect(t.get('efi')?.type).toBe('dir');
  });

  it('the generated units pass systemd-analyze verify', async () => {
    requireTool('systemd-analyze', 'systemd');
    const { profile } = await loadProfile(EXAMPLE);
    const t = new FileTree();
    addOsIntegration(t, profile);
    const dir = await mkdtemp(join(tmpdir(), 'ossify-units-'));
    try {
      for (const p of ['usr/lib/systemd/system/ossify-health.service', 'usr/lib/systemd/system/efi.mount']) {
        await writeFile(join(dir, p.split('/').pop()!), await text(t, p));
      }
      // containerd.service is not on this machine: verify the gate's own syntax, with a stand-in unit.
      await writeFile(join(dir, 'containerd.service'), '[Service]\nExecStart=/bin/true\n');
      // The gate's script is not on this machine (verify says so); every key and section must parse.
      const r = run('systemd-analyze', ['verify', '--man=no', join(dir, 'ossify-health.service'), join(dir, 'efi.mount')], { env: { ...process.env, SYSTEMD_UNIT_PATH: `${dir}:` } });
      expect(r.stdout + r.stderr).toContain('/usr/lib/ossify/health-check is not executable');
      expect(r.stdout + r.stderr).not.toMatch(/Unknown (key|section|lvalue)|Failed to parse|Invalid/i);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses boot.health without rootfs.os.init: systemd', () => {
    const r = Profile.safeParse({ name: 'x', version: '1', kernel: { input: { deb: 'k' } }, initramfs: { busybox: { deb: 'b' } }, rootfs: { inputs: [{ deb: 'b' }] }, boot: { health: ['containerd.service'] } });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(/rootfs\.os\.init: systemd/);
  });

  it('rootfs.os.var: state without device-mapper, dmsetup, mke2fs or room on STATE is refused at file:line:column with the fix', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ossify-var-state-'));
    try {
      const profile = join(dir, 'p.yaml');
      await writeFile(
        profile,
        `extends: ${EXAMPLE}\nkernel:\n  modules: [squashfs, virtio_blk]\ninitramfs:\n  programs:\n    - path: sbin/e2fsck\n      from: { deb: e2fsprogs }\nrootfs:\n  verity: false\ndisk:\n  state: 8MiB\n`,
      );
      const r = await ossify(['build', profile, '--out', join(dir, 'out')]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain(`${profile}:3:12: invalid value a list at kernel.modules`);
      expect(r.stderr).toContain('hint: kernel.modules must be a list that loads device-mapper (dm_mod, or dm_verity, which needs it) for rootfs.os.var: state');
      expect(r.stderr).toContain(`${profile}:6:5: invalid value a list at initramfs.programs`);
      expect(r.stderr).toContain(
        'hint: initramfs.programs must be a list with { path: sbin/dmsetup, from: { deb: dmsetup, depends: true } } and { path: sbin/mke2fs, from: { deb: e2fsprogs, depends: true } } for rootfs.os.var: state',
      );
      expect(r.stderr).toContain(`${profile}:11:10: invalid value "8MiB" at disk.state`);
      expect(r.stderr).toContain('hint: disk.state must be at least 16MiB for rootfs.os.var: state');
      expect(existsSync(join(dir, 'out'))).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('site data for a systemd OS also carries a systemd-networkd .network file', async () => {
    const site = { name: 's', hostname: 's.example', network: { interface: 'eth0', address: '192.0.2.20/24', gateway: '192.0.2.1', dns: ['192.0.2.53'] } };
    expect(await text(await siteTree(site, 0, { networkd: true }), NETWORKD_SITE_FILE)).toBe(
      '[Match]\nName=eth0\n\n[Network]\nAddress=192.0.2.20/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n',
    );
    expect((await siteTree(site, 0)).get(NETWORKD_SITE_FILE)).toBeUndefined();
  });
});

describe('image layers with binary xattrs (GNU tar SCHILY.xattr, e.g. a POSIX ACL)', () => {
  async function aclTar(): Promise<Uint8Array> {
    const pack = tarStream.pack();
    const chunks: Buffer[] = [];
    const done = (async () => {
      for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
    })();
    // What tar-stream hands over for a raw (non-UTF-8) value: replacement characters.
    const header = { name: 'var/log/journal/', type: 'directory' as const, mode: 0o2755, mtime: new Date(0), pax: { 'SCHILY.xattr.system.posix_acl_access': '\u0002\u0000\uFFFD\uFFFD', 'SCHILY.xattr.user.note': 'ok' } };
    pack.entry(header);
    pack.finalize();
    await done;
    return Buffer.concat(chunks);
  }

  it('are refused when the input keeps xattrs, and dropped (readable ones kept for the policy) when it strips them', async () => {
    await expect(readArchive(await aclTar(), 'oci:x layer 1/1')).rejects.toThrow(/var\/log\/journal.*extended attribute system\.posix_acl_access has a binary value/);
    const t = await readArchive(await aclTar(), 'oci:x layer 1/1', { binaryXattrs: 'drop' });
    const e = t.get('var/log/journal');
    expect(e?.type).toBe('dir');
    expect(Object.keys((e as { xattrs?: Record<string, Uint8Array> }).xattrs ?? {})).toEqual(['user.note']);
  });
});

describe('bad oci: roots fail the build, and nothing is written under out/', () => {
  let reg: RegistryHandle;
  let work: string;
  let client: RegistryClient;

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'ossify-real-os-bad-'));
    reg = await startRegistry();
    client = await RegistryClient.create(reg.host, { insecure: true, credentials: null });
  }, 120_000);
  afterAll(async () => {
    await client?.close();
    await reg?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  async function build(name: string, files: Parameters<typeof pushImage>[2]) {
    const { digest } = await pushImage(client, `bad/${name}`, files);
    const ref = `${reg.host}/bad/${name}@${digest}`;
    const profile = join(work, `${name}.yaml`);
    await writeFile(profile, `extends: ${EXAMPLE}\nrootfs:\n  inputs:\n    - oci: ${ref}\n      insecure: true\n`);
    const out = join(work, `out-${name}`);
    await mkdir(out);
    const r = await ossify(['build', profile, '--out', out, '--cache-dir', join(PROJECT_ROOT, 'out', 'cache')]);
    return { r, ref, left: readdirSync(out).filter((f) => f !== 'cache') };
  }

  it('an image with no init', async () => {
    const { r, ref, left } = await build('noinit', [{ name: 'etc/', type: 'directory' }, { name: 'etc/hostname', content: 'x\n' }]);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toContain(`the rootfs has no /sbin/init: it is missing or a dangling symlink in rootfs.inputs (oci:${ref})`);
    expect(left).toEqual([]);
  }, 300_000);

  it('an image whose init is for another arch', async () => {
    const { r, ref, left } = await build('arm', [
      { name: 'sbin', type: 'symlink', linkname: 'usr/sbin' },
      { name: 'usr/sbin/init', type: 'symlink', linkname: '../lib/systemd/systemd' },
      { name: 'usr/lib/systemd/systemd', content: aarch64Elf(), mode: 0o755 },
    ]);
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toContain(`oci:${ref}: /sbin/init (/usr/lib/systemd/systemd) is built for aarch64, but the profile's arch is x86_64`);
    expect(left).toEqual([]);
    expect(existsSync(join(work, 'out-arm', 'debian-systemd-1.0.0'))).toBe(false);
  }, 300_000);
});
