import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../builder/oci/registry.ts';
import { runDisk } from '../../builder/run/qemu.ts';
import { diskStatus, ossify, ossifyOk, PROJECT_ROOT, slotOf } from '../helpers/cli.ts';
import { debianOsLayer, pushDebianOs } from '../helpers/debian-os.ts';
import { requireTool } from '../helpers/oracle.ts';
import { startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * A real OS from a container image: Debian with systemd and containerd (mmdebstrap, cached in
 * out/cache/debian-os), pushed to a local docker-registry, built into releases by
 * profiles/examples/debian-systemd.yaml, pushed, installed and upgraded through the registry,
 * and booted under QEMU + OVMF (TCG) with a network card on QEMU's isolated user-mode network.
 * /var lives on STATE (rootfs.os.var: state): made on the first boot, kept across the upgrades.
 * Six systemd boots in all.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const EXAMPLE = join(PROJECT_ROOT, 'profiles/examples/debian-systemd.yaml');
const BOOT_TIMEOUT = 420;

let reg: RegistryHandle;
let work: string;
const refs: Record<string, string> = {};

/** The test's releases of the example: the registry's image, fast zstd, and a unit that powers off after the report. */
function profiles(osRef: string): Record<string, string> {
  const inputs = (extra = '') => `rootfs:
  inputs:
    - oci: ${osRef}
      insecure: true
    - dir: ${join(PROJECT_ROOT, 'overlays/real-os')}
    - files:
        - path: etc/systemd/system/ossify-report.service.d/test-poweroff.conf
          content: |
            [Service]
            ExecStartPost=/bin/systemctl --no-block poweroff
${extra}`;
  const v1 = `extends: ${EXAMPLE}
version: 1.0.0
${inputs()}  squashfs: { compression: zstd, level: 3 }
site:
  name: store-a
  hostname: store-a.fleet.example
  network: { dhcp: true }
kernel:
  # The card keeps the kernel's name (eth0, the site's default interface), not a PCI-slot name.
  cmdline: console=ttyS0 panic=5 loglevel=4 net.ifnames=0
`;
  return {
    'v1-a': v1,
    'v1-b': `extends: ./v1-a.yaml
site:
  name: store-b
  hostname: store-b.fleet.example
  network: { dhcp: false, address: 192.0.2.20/24, gateway: 192.0.2.1 }
`,
    'v2-a': 'extends: ./v1-a.yaml\nversion: 2.0.0\n',
    // A release whose required unit fails: it reaches multi-user.target but is never blessed.
    'v3-a-broken': `extends: ./v1-a.yaml
version: 3.0.0
${inputs(`        - path: usr/lib/systemd/system/site-agent.service
          content: |
            [Unit]
            Description=A site agent that never comes up
            [Service]
            Type=oneshot
            RemainAfterExit=yes
            ExecStart=/bin/false
`)}boot:
  health: [containerd.service, site-agent.service]
`,
  };
}

let boots = 0;
async function boot(disk: string, expect: RegExp) {
  const r = await runDisk({ disk, expect, timeout: BOOT_TIMEOUT, memoryMiB: 1024, net: 'isolated' });
  // Kept for whoever reads a failure: the line the assertions see is a small part of it.
  await writeFile(join(tmpdir(), `ossify-e2e-real-os-boot-${++boots}.log`), r.log);
  if (!r.matched) throw new Error(`no /${expect.source}/ within ${BOOT_TIMEOUT} s; serial log:\n${r.log.slice(-8000)}`);
  return r;
}

const count = (log: string, re: RegExp) => log.match(new RegExp(re.source, 'g'))?.length ?? 0;
const line = (log: string) => /OSSIFY-BOOT [^\r\n]*/.exec(log)?.[0] ?? '';

beforeAll(async () => {
  requireTool('qemu-system-x86_64', 'qemu-system-x86');
  const layer = await debianOsLayer(CACHE);
  work = await mkdtemp(join(tmpdir(), 'ossify-e2e-real-os-'));
  reg = await startRegistry();
  const client = await RegistryClient.create(reg.host, { insecure: true, credentials: null });
  const osRef = `${reg.host}/base/debian-systemd@${await pushDebianOs(client, 'base/debian-systemd', layer)}`;
  await client.close();
  for (const [name, text] of Object.entries(profiles(osRef))) await writeFile(join(work, `${name}.yaml`), text);
  for (const name of ['v1-a', 'v1-b', 'v2-a', 'v3-a-broken']) {
    const r = await ossifyOk(['build', join(work, `${name}.yaml`), '--out', join(work, 'out'), '--cache-dir', CACHE, '--push', `${reg.host}/ossify/debian-systemd`, '--insecure', '--json']);
    refs[name] = (JSON.parse(r.stdout) as { pushed: string }).pushed;
  }
}, 1_800_000);

afterAll(async () => {
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('a container-image OS (Debian, systemd, containerd) through the registry', () => {
  const disk = () => join(work, 'a.raw');

  it('installs and boots to multi-user.target with containerd running, the site applied by systemd, /var made on STATE', async () => {
    // No --cmdline: the release in the registry carries its boot settings.
    await ossifyOk(['install', '--image', refs['v1-a']!, '--insecure', '--disk', disk()]);
    const r = await boot(disk(), /OSSIFY-BOOT name=debian-systemd version=1\.0\.0 slot=a [^\r\n]*/);
    expect(line(r.log)).toBe(
      'OSSIFY-BOOT name=debian-systemd version=1.0.0 slot=a os=debian-12 target=active containerd=active machine-id=set hostname=store-a.fleet.example site=store-a network=10-ossify-site.network links=eth0 address=10.0.2.15 var=ext4 var-boots=1',
    );
    // A first install is not on trial: no health gate, nothing to bless.
    expect(r.log).not.toContain('ossify-health');
  }, 600_000);

  it('upgrades to 2.0.0, which is blessed by systemd-bless-boot only after containerd is up', async () => {
    await ossifyOk(['upgrade', '--image', refs['v2-a']!, '--insecure', '--disk', disk(), '--tries', '2']);
    expect(slotOf(await diskStatus(disk()), 'b')).toMatchObject({ bootsNext: true, entry: { state: 'trying', triesLeft: 2 } });
    const r = await boot(disk(), /OSSIFY-BOOT name=debian-systemd version=2\.0\.0 slot=b [^\r\n]*/);
    expect(r.log).toContain('ossify-health: healthy: containerd.service');
    // The same /var as 1.0.0's: its file system is kept, and so is what 1.0.0 wrote there
    // (var-boots counts the lines every boot appends to /var/lib/ossify-report/boots).
    expect(line(r.log)).toMatch(/ links=eth0 address=10\.0\.2\.15 var=ext4 var-boots=2$/);
    expect(r.log.indexOf('ossify-health: healthy')).toBeLessThan(r.log.indexOf('OSSIFY-BOOT'));
    const s = await diskStatus(disk());
    expect(s.next).toBe('b');
    expect(slotOf(s, 'b')).toMatchObject({ entry: { state: 'good', file: 'ossify-b.conf' }, release: { version: '2.0.0' } });
  }, 600_000);

  it('an upgrade whose health unit fails is tried twice, unblessed, then 2.0.0 boots again and status shows the slot bad', async () => {
    await ossifyOk(['upgrade', '--image', refs['v3-a-broken']!, '--insecure', '--disk', disk(), '--tries', '2']);
    const r = await boot(disk(), /OSSIFY-BOOT name=debian-systemd version=2\.0\.0 slot=b [^\r\n]*/);
    expect(count(r.log, /ossify-health: not healthy: site-agent\.service=failed; rebooting unblessed/)).toBe(2);
    expect(r.log.lastIndexOf('ossify-health: not healthy')).toBeLessThan(r.log.indexOf('OSSIFY-BOOT'));
    // The failed tries shared /var too (whether their report ran before the reboot is a race).
    expect(Number(/ var=ext4 var-boots=(\d+)$/.exec(line(r.log))?.[1])).toBeGreaterThanOrEqual(3);
    const s = await diskStatus(disk());
    expect(s.next).toBe('b');
    expect(slotOf(s, 'a')).toMatchObject({ bootsNext: false, entry: { state: 'bad', triesLeft: 0, triesDone: 2 }, release: { version: '3.0.0' } });
    expect(slotOf(s, 'b')).toMatchObject({ bootsNext: true, entry: { state: 'good' }, release: { version: '2.0.0' } });
  }, 900_000);

  it('a second site of the same base reports its own hostname and network', async () => {
    const b = join(work, 'b.raw');
    await ossifyOk(['install', '--image', refs['v1-b']!, '--insecure', '--disk', b]);
    const r = await boot(b, /OSSIFY-BOOT name=debian-systemd version=1\.0\.0 slot=a [^\r\n]*/);
    // systemd-networkd gave the card the site's static address.
    expect(line(r.log)).toMatch(/ hostname=store-b\.fleet\.example site=store-b network=10-ossify-site\.network links=eth0 address=192\.0\.2\.20 var=ext4 var-boots=1$/);
  }, 600_000);

});
