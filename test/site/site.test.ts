import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadProfile } from '../../builder/profile/load.ts';
import { profileJsonSchemaText } from '../../builder/profile/schema.ts';
import { bounded, matrixProfiles } from '../../builder/matrix.ts';
import { siteFileText, siteTar, siteTree } from '../../builder/site/data.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';

const root = mkdtempSync(join(tmpdir(), 'ossify-site-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
function profile(text: string, files: Record<string, string> = {}): string {
  const dir = join(root, `p${n++}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'base.yaml'), `name: fleet\nversion: 2.0.0\nepoch: 1700000000\nkernel:\n  input: { deb: linux-image-cloud-amd64 }\ninitramfs:\n  busybox: { deb: busybox-static }\nrootfs:\n  inputs:\n    - dir: overlay\n`);
  for (const [p, c] of Object.entries(files)) {
    mkdirSync(join(dir, p, '..'), { recursive: true });
    writeFileSync(join(dir, p), c);
  }
  writeFileSync(join(dir, 'site.yaml'), text);
  return join(dir, 'site.yaml');
}

const CERT = `-----BEGIN CERTIFICATE-----\nMIIBuDCCAV+gAwIBAgIUWjPvcKB2dsY\n-----END CERTIFICATE-----\n`;

describe('site profiles', () => {
  it('have a base digest equal to the digest of the profile they extend', async () => {
    const file = profile('extends: base.yaml\nsite:\n  name: store-7\n  hostname: store-7.example\n');
    const site = await loadProfile(file);
    const base = await loadProfile(join(file, '..', 'base.yaml'));
    expect(site.digest).not.toBe(base.digest);
    expect(site.baseDigest).toBe(base.digest);
    expect(base.baseDigest).toBe(base.digest);
    // Two sites of one base, in another directory than the base: one base digest.
    const other = await loadProfile(join(PROJECT_ROOT, 'profiles', 'sites', 'store-0001.yaml'));
    const other2 = await loadProfile(join(PROJECT_ROOT, 'profiles', 'sites', 'store-0002.yaml'));
    const dflt = await loadProfile(join(PROJECT_ROOT, 'profiles', 'default.yaml'));
    expect(other.baseDigest).toBe(dflt.digest);
    expect(other2.baseDigest).toBe(dflt.digest);
  });

  it('are validated with file:line:column errors', async () => {
    const bad = profile('extends: base.yaml\nsite:\n  name: Store 7\n  network:\n    address: 10.0.0.5\n');
    const r = await ossify(['validate', bad]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/site\.yaml:3:\d+/);
    expect(r.stderr).toMatch(/prefix length/);
  });

  it('are in the JSON Schema, and profiles/schema.json is fresh', async () => {
    expect(profileJsonSchemaText()).toContain('"site"');
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(join(PROJECT_ROOT, 'profiles', 'schema.json'), 'utf8')).toBe(profileJsonSchemaText());
  });
});

describe('site data', () => {
  it('becomes a small tree under etc/ only, as a tar that bsdtar lists', async () => {
    requireTool('bsdtar', 'libarchive-tools');
    const file = profile(
      [
        'extends: base.yaml',
        'site:',
        '  name: store-7',
        '  hostname: store-7.fleet.example',
        '  network:',
        '    address: 192.0.2.7/25',
        '    gateway: 192.0.2.1',
        '    dns: [192.0.2.53]',
        '  certificates:',
        '    - { name: fleet-ca, source: certs/ca.pem }',
        "  env: { REGION: \"eu west\", QUOTE: \"it's\" }",
        '  overlay: site-overlay',
        '  files:',
        '    - { path: etc/till.conf, content: "tills=4\\n" }',
        '    - { path: etc/tills, symlink: till.conf }',
      ].join('\n'),
      { 'certs/ca.pem': CERT, 'site-overlay/etc/motd': 'hello\n' },
    );
    const site = (await loadProfile(file)).profile.site!;
    const tree = await siteTree(site, 1700000000);
    expect(await siteFileText(tree, 'etc/hostname')).toBe('store-7.fleet.example\n');
    expect(await siteFileText(tree, 'etc/hosts')).toContain('127.0.1.1\tstore-7.fleet.example store-7');
    expect(await siteFileText(tree, 'etc/network/interfaces')).toBe(
      'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n\taddress 192.0.2.7\n\tnetmask 255.255.255.128\n\tgateway 192.0.2.1\n',
    );
    expect(await siteFileText(tree, 'etc/resolv.conf')).toBe('nameserver 192.0.2.53\n');
    expect(await siteFileText(tree, 'etc/ssl/certs/fleet-ca.pem')).toBe(CERT);
    expect(await siteFileText(tree, 'etc/ossify/site.env')).toBe("SITE_NAME='store-7'\nSITE_HOSTNAME='store-7.fleet.example'\nQUOTE='it'\\''s'\nREGION='eu west'\n");
    expect(await siteFileText(tree, 'etc/motd')).toBe('hello\n');
    const tar = await siteTar(tree, 1700000000);
    expect(tar.length).toBeLessThan(16 << 10);
    // Deterministic: the same site gives the same bytes.
    expect(Buffer.from(await siteTar(await siteTree(site, 1700000000), 1700000000)).equals(Buffer.from(tar))).toBe(true);
    const tarFile = join(root, 'site.tar');
    writeFileSync(tarFile, tar);
    const list = runOk('bsdtar', ['-tvf', tarFile]);
    for (const p of ['etc/hostname', 'etc/network/interfaces', 'etc/ssl/certs/fleet-ca.pem', 'etc/ossify/site.env', 'etc/motd', 'etc/till.conf']) expect(list).toContain(p);
    expect(list).toMatch(/lrwxrwxrwx .* etc\/tills -> till\.conf/);
    for (const line of list.trim().split('\n')) expect(line).toMatch(/ etc(\/|$)/);
  });

  it('refuses what cannot be applied over /etc, and contradictions', async () => {
    const outside = profile('extends: base.yaml\nsite:\n  name: s\n  files:\n    - { path: usr/bin/x, content: "" }\n');
    await expect(siteTree((await loadProfile(outside)).profile.site!, 0)).rejects.toThrow(/not under etc\//);
    const both = profile('extends: base.yaml\nsite:\n  name: s\n  network: { dhcp: true, address: 10.0.0.1/8 }\n');
    await expect(siteTree((await loadProfile(both)).profile.site!, 0)).rejects.toThrow(/not both/);
    const notPem = profile('extends: base.yaml\nsite:\n  name: s\n  certificates: [{ name: x, content: "hello" }]\n');
    await expect(siteTree((await loadProfile(notPem)).profile.site!, 0)).rejects.toThrow(/not a PEM certificate/);
    const overlay = profile('extends: base.yaml\nsite:\n  name: s\n  overlay: o\n', { 'o/usr/x': 'x' });
    await expect(siteTree((await loadProfile(overlay)).profile.site!, 0)).rejects.toThrow(/not under etc\//);
  });
});

describe('many profiles', () => {
  it('come from a directory or a list file for --matrix', async () => {
    const dir = join(root, 'matrix');
    mkdirSync(dir);
    for (const f of ['b.yaml', 'a.yaml', 'a.lock.yaml', 'notes.txt']) writeFileSync(join(dir, f), '');
    expect(await matrixProfiles(dir)).toEqual([join(dir, 'a.yaml'), join(dir, 'b.yaml')]);
    writeFileSync(join(dir, 'list.txt'), '# sites\nb.yaml\n\na.yaml\n');
    expect(await matrixProfiles(join(dir, 'list.txt'))).toEqual([join(dir, 'b.yaml'), join(dir, 'a.yaml')]);
    writeFileSync(join(dir, 'list.yaml'), '- a.yaml\n- sub/c.yaml\n');
    expect(await matrixProfiles(join(dir, 'list.yaml'))).toEqual([join(dir, 'a.yaml'), join(dir, 'sub', 'c.yaml')]);
    await expect(matrixProfiles(join(dir, 'absent'))).rejects.toThrow(/no such file/);
  });

  it('run with bounded concurrency, every outcome kept in order', async () => {
    let running = 0;
    let max = 0;
    const r = await bounded([1, 2, 3, 4, 5, 6, 7], 3, async (x) => {
      max = Math.max(max, ++running);
      await new Promise((res) => setTimeout(res, 5 * (8 - x)));
      running--;
      if (x === 4) throw new Error('four');
      return x * 10;
    });
    expect(max).toBe(3);
    expect(r.map((o) => (o.status === 'fulfilled' ? o.value : (o.reason as Error).message))).toEqual([10, 20, 30, 'four', 50, 60, 70]);
  });

  it('refuse two profiles that would build into one directory', async () => {
    const a = profile('extends: base.yaml\nsite: { name: same }\n');
    const b = profile('extends: base.yaml\nsite: { name: same }\n');
    const r = await ossify(['build', a, b, '--out', join(root, 'out')]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/both build/);
  });
});
