import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ARCHES, efiNames, type ArchInfo } from '../../builder/arch.ts';
import { INIT_SCRIPT } from '../../builder/initramfs/init-script.ts';
import { DEVICE_SCRIPT } from '../../builder/installer/device-script.ts';
import { INSTALLER_INIT } from '../../builder/iso/installer-init.ts';
import { composeShellScript, shellAssignments, shellQuote } from '../../builder/shell/compose.ts';
import { PROJECT_ROOT } from '../helpers/cli.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

/**
 * The shell scripts ossify puts into images (builder/**\/*.sh: the initramfs /init, the
 * on-device installer and the ISO installer /init, composed by
 * builder/shell/compose.ts), as they ship: shellcheck finds nothing in them (POSIX sh, the
 * dialect closest to busybox ash that shellcheck 0.9 knows), busybox sh parses them, and the
 * constants preamble quotes any bytes so the script sees them unchanged.
 */

const work = tempDir('shell-scripts');
afterAll(() => work.cleanup());

const SHIPPED = { 'initramfs /init': INIT_SCRIPT, 'on-device installer': DEVICE_SCRIPT, 'ISO installer /init': INSTALLER_INIT };

describe('the shipped shell scripts', () => {
  for (const [name, script] of Object.entries(SHIPPED)) {
    it(`${name}: shellcheck -s sh finds nothing, busybox sh parses it, no marker is left`, () => {
      needTool('shellcheck', 'shellcheck');
      needTool('busybox', 'busybox');
      const r = run('shellcheck', ['--norc', '-s', 'sh', '-f', 'gcc', '-'], { input: Buffer.from(script) });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(run('busybox', ['sh', '-n', '-c', script]).code).toBe(0);
      expect(script.startsWith('#!/bin/busybox sh\n')).toBe(true);
      expect(script).not.toMatch(/# ossify:/);
      // Every warning switched off names it and says why, on the line above the one it excuses.
      for (const d of script.matchAll(/^.*shellcheck.*$/gm)) expect(d[0]).toMatch(/^\t*# shellcheck disable=SC\d{4} # \S.{10,}$/);
    });
  }

  it('shellcheck is a real oracle here: it flags what the scripts avoid', () => {
    needTool('shellcheck', 'shellcheck');
    const r = run('shellcheck', ['--norc', '-s', 'sh', '-f', 'gcc', '-'], { input: Buffer.from('#!/bin/sh\nf=$1\nrm $f\n') });
    expect(r.stdout).toMatch(/SC2086/);
  });

  it('every .sh under builder/ is part of a shipped script, and npm run build copies each into dist/', () => {
    const sh = (readdirSync(join(PROJECT_ROOT, 'builder'), { recursive: true }) as string[]).filter((f) => f.endsWith('.sh')).sort();
    expect(sh).toEqual(['initramfs/init.sh', 'installer/device.sh', 'iso/installer-init.sh', 'shell/partitions.sh']);
    const fragment = readFileSync(join(PROJECT_ROOT, 'builder/shell/partitions.sh'), 'utf8');
    for (const script of [INIT_SCRIPT, DEVICE_SCRIPT]) expect(script).toContain(fragment);
    // The package and the CLI run dist/: the build must have put the same bytes there.
    for (const f of sh) expect(readFileSync(join(PROJECT_ROOT, 'dist/builder', f), 'utf8'), `dist/builder/${f}: run npm run build`).toBe(readFileSync(join(PROJECT_ROOT, 'builder', f), 'utf8'));
  });
});

describe('the on-device installer\'s architecture table', () => {
  it('names every architecture of builder/arch.ts by each of its names, with its systemd-boot and removable path', () => {
    needTool('busybox', 'busybox');
    // The script's functions without its command dispatch at the end.
    const functions = DEVICE_SCRIPT.slice(0, DEVICE_SCRIPT.lastIndexOf('\ncase "${1:-}" in\n') + 1);
    const arches = Object.values(ARCHES as Record<string, ArchInfo>);
    const names = [...new Set(arches.flatMap((a) => [a.uname, a.deb, a.oci.architecture])), 'sparc64', ''];
    const probe = `${functions}for n in ${names.map((n) => shellQuote(n)).join(' ')}; do echo "[$n] $(norm_arch "$n") [$(efi_loader "$n")] [$(efi_removable "$n")]"; done\n`;
    const r = run('busybox', ['sh', '-c', probe], { env: { OSSIFY_BUSYBOX: '/usr/bin/busybox' } });
    expect(r.code, r.stderr).toBe(0);
    const expected = names.map((n) => {
      const a = arches.find((x) => [x.uname, x.deb, x.oci.architecture].includes(n));
      return a ? `[${n}] ${a.uname} [${efiNames(a.uname).systemdBoot}] [${efiNames(a.uname).removable}]` : `[${n}] ${n} [] []`;
    });
    expect(r.stdout.trimEnd().split('\n')).toEqual(expected);
  });
});

describe('the constants preamble', () => {
  it('hands any string to sh unchanged, and whole numbers as numbers', () => {
    needTool('busybox', 'busybox');
    const values = ["it's", 'a\nb', '$(reboot) `x` ${y} \\ "q"', '', "''", ' lead and trail ', '*', 'ü€'];
    const constants = Object.fromEntries(values.map((v, i) => [`v${i}`, v]));
    const script = `${shellAssignments({ ...constants, n: 1048576 })}${values.map((_, i) => `printf '%s\\0' "$v${i}"\n`).join('')}echo $((n + 1))\n`;
    const r = run('busybox', ['sh', '-c', script]);
    expect(r.code, r.stderr).toBe(0);
    const parts = r.stdout.split('\0');
    expect(parts.slice(0, values.length)).toEqual(values);
    expect(parts[values.length]).toBe('1048577\n');
    expect(shellQuote("a'b")).toBe(`'a'\\''b'`);
  });

  it('refuses a name that is not a plain shell variable, a number that is not whole, a missing or extra marker', () => {
    expect(() => shellAssignments({ 'a-b': 'x' })).toThrow(/not a lowercase shell variable name/);
    expect(() => shellAssignments({ 'x;reboot': 'x' })).toThrow(/not a lowercase shell variable name/);
    expect(() => shellAssignments({ PATH: 'x' })).toThrow(/not a lowercase shell variable name/);
    expect(() => shellAssignments({ n: 1.5 })).toThrow(/not a whole number/);
    const dir = join(work.path, 'compose');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'plain.sh'), '#!/bin/busybox sh\necho "$a"\n');
    writeFileSync(join(dir, 'marked.sh'), '#!/bin/busybox sh\n# ossify:constants\n# ossify:include part.sh\necho "$a"\n');
    writeFileSync(join(dir, 'part.sh'), 'f() { :; }\n');
    const base = pathToFileURL(join(dir, 'x.ts'));
    expect(() => composeShellScript(base, './plain.sh', { a: 'x' })).toThrow(/plain\.sh: needs one `# ossify:constants` line \(found 0\)/);
    expect(() => composeShellScript(base, './marked.sh')).toThrow(/marked\.sh: takes no constants/);
    expect(composeShellScript(base, './marked.sh', { a: 'x' })).toBe("#!/bin/busybox sh\na='x'\nf() { :; }\necho \"$a\"\n");
    expect(() => composeShellScript(base, './missing.sh')).toThrow(/missing\.sh is missing: .*npm run build/);
  });
});
