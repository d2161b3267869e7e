import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../helpers/cli.ts';
import { run, runOk } from '../helpers/oracle.ts';

/**
 * ossify as users get it: a compiled CLI (dist/) that never needs tsx, and an npm package that
 * installs into an empty directory and works, as a command and as a library.
 */
const work = mkdtempSync(join(tmpdir(), 'ossify-package-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const node = process.execPath;

describe('the compiled CLI', () => {
  it('runs from dist/ with tsx absent from node_modules', () => {
    const dir = join(work, 'no-tsx');
    mkdirSync(join(dir, 'node_modules'), { recursive: true });
    for (const f of ['bin', 'dist', 'package.json']) symlinkSync(join(PROJECT_ROOT, f), join(dir, f));
    for (const pkg of readdirSync(join(PROJECT_ROOT, 'node_modules'))) {
      if (pkg === 'tsx' || pkg === '.bin') continue;
      symlinkSync(join(PROJECT_ROOT, 'node_modules', pkg), join(dir, 'node_modules', pkg));
    }
    const version = run(node, [join(dir, 'bin', 'ossify.js'), '--version']);
    expect(version.stderr).toBe('');
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
    expect(version.code).toBe(0);
    const validate = run(node, [join(dir, 'bin', 'ossify.js'), 'validate', join(PROJECT_ROOT, 'profiles', 'default.yaml'), '--json']);
    expect(validate.code, validate.stderr).toBe(0);
    expect(JSON.parse(validate.stdout)).toMatchObject({ name: 'ossify-default' });
  });

  it('refuses a dist/ older than the source, and a missing dist/, saying how to build', () => {
    const dir = join(work, 'stale');
    mkdirSync(join(dir, 'builder'), { recursive: true });
    cpSync(join(PROJECT_ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
    const missing = run(node, [join(dir, 'bin', 'ossify.js'), '--version']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/dist\/builder\/cli\.js is missing[\s\S]*npm run build/);

    mkdirSync(join(dir, 'dist', 'builder'), { recursive: true });
    writeFileSync(join(dir, 'dist', 'builder', 'cli.js'), 'process.stdout.write("compiled\\n");\n');
    writeFileSync(join(dir, 'builder', 'cli.ts'), '// source\n');
    utimesSync(join(dir, 'dist', 'builder', 'cli.js'), 1000, 1000);
    const stale = run(node, [join(dir, 'bin', 'ossify.js'), '--version']);
    expect(stale.code).toBe(1);
    expect(stale.stderr).toMatch(/dist\/ is older than builder\/cli\.ts[\s\S]*npm run build/);

    utimesSync(join(dir, 'builder', 'cli.ts'), 500, 500);
    // A shell script the build copies into dist/ counts as source too, and its copy must be there.
    mkdirSync(join(dir, 'builder', 'shell'));
    writeFileSync(join(dir, 'builder', 'shell', 'x.sh'), 'true\n');
    utimesSync(join(dir, 'builder', 'shell', 'x.sh'), 500, 500);
    const uncopied = run(node, [join(dir, 'bin', 'ossify.js'), '--version']);
    expect(uncopied.code).toBe(1);
    expect(uncopied.stderr).toMatch(/dist\/ is older than builder\/shell\/x\.sh[\s\S]*npm run build/);
    mkdirSync(join(dir, 'dist', 'builder', 'shell'));
    writeFileSync(join(dir, 'dist', 'builder', 'shell', 'x.sh'), 'true\n');
    const fresh = run(node, [join(dir, 'bin', 'ossify.js')]);
    expect(fresh.stdout).toBe('compiled\n');
  });
});

describe('the npm package', () => {
  it('npm pack, then npm install of the tarball in an empty directory, gives a working ossify and library', () => {
    const packDir = join(work, 'pack');
    mkdirSync(packDir);
    // dist/ is what `npm test` just compiled; prepack would rewrite it under the other test files' feet.
    runOk('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', packDir], { cwd: PROJECT_ROOT });
    const tgz = readdirSync(packDir).find((f) => f.endsWith('.tgz'));
    expect(tgz).toBeDefined();
    const files = runOk('tar', ['-tzf', join(packDir, tgz!)]).split('\n');
    expect(files).toContain('package/dist/builder/cli.js');
    expect(files).toContain('package/dist/builder/index.d.ts');
    expect(files).toContain('package/profiles/default.yaml');
    // The shell scripts images carry are read next to their compiled modules.
    for (const f of ['initramfs/init.sh', 'installer/device.sh', 'iso/installer-init.sh', 'shell/partitions.sh']) expect(files).toContain(`package/dist/builder/${f}`);
    expect(files.some((f) => f.startsWith('package/builder/') || f.startsWith('package/test/'))).toBe(false);

    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    const install = run('npm', ['install', '--no-audit', '--no-fund', join(packDir, tgz!)], { cwd: app });
    expect(install.code, install.stderr).toBe(0);
    expect(install.stderr).not.toMatch(/EBADENGINE|npm error/);

    const bin = join(app, 'node_modules', '.bin', 'ossify');
    expect(existsSync(join(app, 'node_modules', 'tsx'))).toBe(false);
    const version = run(node, [bin, '--version'], { cwd: app });
    expect(version.code, version.stderr).toBe(0);
    const validate = run(node, [bin, 'validate', join(app, 'node_modules', 'ossify', 'profiles', 'default.yaml'), '--json'], { cwd: app });
    expect(validate.code, validate.stderr).toBe(0);

    // Importing the library composes the images' shell scripts from the package's dist/builder/**/*.sh.
    writeFileSync(
      join(app, 'use.mjs'),
      `import * as ossify from 'ossify';\n` +
        `const p = await ossify.loadProfile(process.argv[2]);\n` +
        `console.log(JSON.stringify({ name: p.profile.name, fns: ['build','pushBuild','install','upgrade','rollback','diskStatus'].filter((f) => typeof ossify[f] === 'function') }));\n`,
    );
    const lib = run(node, [join(app, 'use.mjs'), join(app, 'node_modules', 'ossify', 'profiles', 'default.yaml')], { cwd: app });
    expect(lib.code, lib.stderr).toBe(0);
    expect(JSON.parse(lib.stdout)).toEqual({ name: 'ossify-default', fns: ['build', 'pushBuild', 'install', 'upgrade', 'rollback', 'diskStatus'] });
  }, 300_000);
});
