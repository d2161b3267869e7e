import { describe, expect, it } from 'vitest';
import { parseBuildBoot, releaseBootOf } from '../../builder/boot/release-boot.ts';
import { encodeRelease, parseRelease, type Release } from '../../builder/release/release-json.ts';
import { Profile } from '../../builder/profile/schema.ts';
import { InputError } from '../../builder/util/errors.ts';

/**
 * The boot record a build writes into build.json and release.json (builder/boot/release-boot.ts).
 * test/installer/installer.test.ts checks that install, upgrade and the on-device script follow it;
 * test/e2e/ab.test.ts that a disk installed from a registry boots with it.
 */

const base = { name: 'x', version: '1', kernel: { input: { deb: 'k' } }, initramfs: { busybox: { deb: 'b' } }, rootfs: { inputs: [{ deb: 'b' }] } };

describe('the release boot record', () => {
  it('is the profile\'s boot settings, its kernel arguments without the slot\'s own, one space apart', () => {
    const p = Profile.parse({ ...base, kernel: { ...base.kernel, cmdline: '  console=ttyS0\tpanic=5  ossify.slot=b quiet ' }, boot: { timeout: 4, tries: 7 } });
    expect(releaseBootOf(p, 'x.yaml')).toEqual({ entries: 'type1', cmdline: 'console=ttyS0 panic=5 quiet', timeout: 4, tries: 7 });
    const sb = Profile.parse({ ...base, boot: { entries: 'uki', secureBoot: { keys: 'k' } } });
    expect(releaseBootOf(sb, 'x.yaml')).toEqual({ entries: 'uki', cmdline: '', timeout: 0, tries: 3, secureBoot: { enroll: 'force' } });
  });

  it('refuses a control character the on-device script could not read back', () => {
    const p = Profile.parse({ ...base, kernel: { ...base.kernel, cmdline: 'console=ttyS0 a=\u0001' } });
    expect(() => releaseBootOf(p, 'x.yaml')).toThrow(InputError);
    expect(() => releaseBootOf(p, 'x.yaml')).toThrow(/x\.yaml: kernel\.cmdline holds the control character U\+0001/);
  });

  it('round-trips through release.json, one key a line, keeping keys a newer ossify adds', () => {
    const r: Release = {
      schemaVersion: 1,
      name: 'x',
      version: '1',
      arch: 'x86_64',
      profileDigest: 'sha256:00',
      created: '2023-11-14T22:13:20Z',
      artifacts: {},
      requirements: { minRootSlotSize: 1 },
      boot: { entries: 'type1', cmdline: 'a="b c" d=\\e', timeout: 0, tries: 3, zeta: { x: 1 }, health: 'y' },
      disk: { esp: 1, root: 2, state: 3 },
    };
    const text = encodeRelease(r);
    expect(text).toContain('  "boot": {\n    "entries": "type1",\n    "cmdline": "a=\\"b c\\" d=\\\\e",\n    "timeout": 0,\n    "tries": 3,\n    "health": "y",\n    "zeta": {"x":1}\n  },\n  "disk": {"esp": 1, "root": 2, "state": 3},\n');
    expect(parseRelease(text, 'test')).toEqual(r);
  });

  it('reads a build.json record, and none from a build made before records (its boot held entries and a flag)', () => {
    expect(parseBuildBoot(undefined, 'b')).toBeUndefined();
    expect(parseBuildBoot({ entries: 'uki', secureBoot: true }, 'b')).toBeUndefined();
    expect(parseBuildBoot({ entries: 'type1', cmdline: '', timeout: 0, tries: 3 }, 'b')).toEqual({ entries: 'type1', cmdline: '', timeout: 0, tries: 3 });
    expect(() => parseBuildBoot({ entries: 'type1', cmdline: '', timeout: 0, tries: 12 }, 'out/build.json')).toThrow(/out\/build\.json: boot\.tries: /);
  });
});
