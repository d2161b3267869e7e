import { execa } from 'execa';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { assertBinaryArch, binaryMachine } from '../builder/arch-check.ts';
import { ARCHES, archInfo, BUILD_ARCHES, efiNames, hostArch, normaliseArch, type ArchInfo } from '../builder/arch.ts';
import { resolveDebInput } from '../builder/inputs/deb-input.ts';
import { loadInput } from '../builder/inputs/index.ts';
import { platformForArch } from '../builder/oci/media-types.ts';
import { DebInput } from '../builder/profile/schema.ts';
import { readContent } from '../builder/tree/content.ts';
import { ossify, PROJECT_ROOT } from './helpers/cli.ts';
import { needTool, run, tempDir } from './helpers/oracle-formats.ts';

/**
 * builder/arch.ts against what other programs say about each architecture: util-linux's GPT
 * type names, readelf on Debian's binaries of that architecture (fetched for it through the
 * deb input, as a build does), the file names in Debian's systemd-boot-efi of that
 * architecture, and the QEMU binaries and UEFI firmware `ossify run` starts.
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
const work = tempDir('arch');
afterAll(() => work.cleanup());

const table = Object.values(ARCHES as Record<string, ArchInfo>);

/** Debian's packages for `arch`, unpacked by the deb input (one apt-cache call: each takes seconds). */
async function debsFor(pkgs: string[], arch: string) {
  return loadInput(DebInput.parse({ deb: pkgs }), { cacheDir: CACHE, arch });
}

describe('the architecture table', () => {
  it('names each root partition type as util-linux does (sfdisk --list-types)', () => {
    needTool('sfdisk', 'fdisk');
    const types = run('sfdisk', ['--label', 'gpt', '--list-types']).stdout;
    const expected: Record<string, string> = { x86_64: 'x86-64', aarch64: 'ARM-64', riscv64: 'RISC-V-64', i686: 'x86', armv7l: 'ARM' };
    for (const a of table) expect(types, a.uname).toMatch(new RegExp(`^${a.rootType}\\s+Linux root \\(${expected[a.uname]!.replace(/[()]/g, '\\$&')}\\)$`, 'm'));
  });

  it('accepts every spelling of an architecture and nothing else', () => {
    for (const a of table) for (const n of [a.uname, a.deb, a.oci.architecture, a.node]) expect(normaliseArch(n), n).toBe(a.uname);
    expect(normaliseArch('sparc64')).toBe('sparc64');
    expect(() => archInfo('sparc64')).toThrow(/unknown architecture "sparc64"/);
    expect(platformForArch('arm64')).toEqual({ architecture: 'arm64', os: 'linux' });
    expect(platformForArch('armv7l')).toEqual({ architecture: 'arm', os: 'linux', variant: 'v7' });
    // The host is what `dpkg --print-architecture` says it is.
    return execa('dpkg', ['--print-architecture']).then((r) => expect(archInfo(hostArch()).deb).toBe(r.stdout.trim()));
  });

  it.each(BUILD_ARCHES.map((a) => [a]))('%s: Debian’s busybox-static for it has its ELF machine (readelf), systemd-boot-efi has its EFI names', async (arch) => {
    needTool('readelf', 'binutils');
    const a = ARCHES[arch];
    const debs = await debsFor(['busybox-static', 'systemd-boot-efi'], arch);
    expect(debs.pin).toMatchObject({ deb: [{ package: 'busybox-static', architecture: a.deb }, { package: 'systemd-boot-efi', architecture: a.deb }] });
    const e = debs.tree.resolve('bin/busybox');
    if (e?.type !== 'file') throw new Error('busybox-static has no bin/busybox');
    const bytes = await readContent(e.content);
    const file = join(work.path, `busybox-${arch}`);
    writeFileSync(file, bytes);
    const machine = /Machine:\s+(.*)/.exec((await execa('readelf', ['-h', file])).stdout)?.[1];
    expect(machine).toBe({ x86_64: 'Advanced Micro Devices X86-64', aarch64: 'AArch64' }[arch]);
    expect(binaryMachine(bytes)).toEqual({ format: 'ELF', machine: a.elfMachine, arch });
    const other = BUILD_ARCHES.find((x) => x !== arch)!;
    expect(() => assertBinaryArch(bytes, other, file, '')).toThrow(new RegExp(`built for ${arch}, but the build is ${other}`));

    const names = efiNames(arch);
    const efiDir = 'usr/lib/systemd/boot/efi';
    expect(debs.tree.children(efiDir)).toEqual(expect.arrayContaining([names.systemdBoot, names.stub]));
    expect(names.removable).toBe(`EFI/BOOT/BOOT${a.efi.toUpperCase()}.EFI`);
    // The PE machine, as file(1) names it (binutils on x86-64 cannot read an arm64 PE).
    const sd = debs.tree.resolve(`${efiDir}/${names.systemdBoot}`);
    if (sd?.type !== 'file') throw new Error(`no ${names.systemdBoot}`);
    const sdBytes = await readContent(sd.content);
    expect(binaryMachine(sdBytes)).toEqual({ format: 'PE', machine: a.peMachine, arch });
    const sdFile = join(work.path, names.systemdBoot);
    writeFileSync(sdFile, sdBytes);
    needTool('file', 'file');
    expect((await execa('file', ['-b', sdFile])).stdout).toMatch({ x86_64: /^PE32\+ executable \(EFI application\) x86-64/, aarch64: /^PE32\+ executable \(EFI application\) Aarch64/ }[arch]);
  });

  it('has a QEMU and UEFI firmware for every buildable architecture', async () => {
    for (const arch of BUILD_ARCHES) {
      const q = ARCHES[arch].qemu;
      const v = await execa(q.binary, ['--version'], { reject: false });
      if ((v as { code?: string }).code === 'ENOENT') throw new Error(`${q.binary} is missing: apt-get install ${q.package}`);
      expect(v.stdout).toMatch(/QEMU emulator version/);
      expect(q.firmware.some((f) => existsSync(f.code) && existsSync(f.vars)), `${arch} firmware: apt-get install ${q.firmwarePackage}`).toBe(true);
    }
  });
});

describe('deb inputs of another architecture', () => {
  it('take architecture-independent packages as they are, and say what to do about an unknown one', async () => {
    const tz = await resolveDebInput(DebInput.parse({ deb: 'tzdata' }), 'arm64');
    expect(tz).toMatchObject([{ package: 'tzdata', architecture: 'all' }]);
    const e = await resolveDebInput(DebInput.parse({ deb: 'linux-image-cloud-amd64' }), 'arm64').then(
      () => undefined,
      (err: Error & { hint?: string }) => err,
    );
    expect(e?.message).toMatch(/unknown package "linux-image-cloud-amd64" for arm64/);
    expect(e?.hint).toMatch(/dpkg --add-architecture arm64/);
  });
});

describe('a profile’s arch', () => {
  it('is one the build knows: anything else is an error at file:line:column (exit 2) naming the choices', async () => {
    const profile = join(work.path, 'bad-arch.yaml');
    writeFileSync(profile, ['name: x', 'version: 1.0.0', 'arch: arm64', 'kernel:', '  input: { deb: k }', 'initramfs:', '  busybox: { deb: b }', 'rootfs:', '  inputs: [{ deb: b }]', ''].join('\n'));
    const r = await ossify(['validate', profile]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${profile}:3:7: invalid value "arm64" at arch`);
    expect(r.stderr).toMatch(/arch must be one of: x86_64, aarch64/);
    const ok = await ossify(['validate', 'profiles/default-arm64.yaml', '--json']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ profile: { arch: 'aarch64', kernel: { cmdline: expect.stringContaining('console=ttyAMA0') } } });
  });
});
