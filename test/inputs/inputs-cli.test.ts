import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { freePort } from '../helpers/registry.ts';

/**
 * Bad inputs through the real CLI: a clear message that names the input, the right exit
 * code, and no output directory (not even a partial one).
 */

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ossify-bad-inputs-'));
  await writeFile(join(dir, 'corrupt.tar.gz'), Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), Buffer.alloc(64, 0x55)]));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function buildWithKernel(name: string, input: string) {
  const profile = join(dir, `${name}.yaml`);
  await writeFile(profile, [`extends: ${join(PROJECT_ROOT, 'profiles', 'default.yaml')}`, `name: ${name}`, 'kernel:', `  input: ${input}`, ''].join('\n'));
  const out = join(dir, `out-${name}`);
  const r = await ossify(['build', profile, '--out', out, '--cache-dir', join(PROJECT_ROOT, 'out', 'cache')]);
  return { ...r, outEntries: await readdir(out).catch(() => [] as string[]) };
}

describe('a bad input stops the build, named, with nothing written', () => {
  it('a missing archive', async () => {
    const r = await buildWithKernel('missing', '{ tar: nope.tar.zst }');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`error: tar:${join(dir, 'nope.tar.zst')}: cannot read the archive: no such file`);
    expect(r.outEntries).toEqual([]);
  });

  it('a corrupt archive', async () => {
    const r = await buildWithKernel('corrupt', '{ tar: corrupt.tar.gz }');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`error: tar:${join(dir, 'corrupt.tar.gz')}: `));
    expect(r.outEntries).toEqual([]);
  });

  it('an unknown package', async () => {
    const r = await buildWithKernel('unknown', '{ deb: ossify-no-such-kernel }');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('error: deb: unknown package "ossify-no-such-kernel"');
    expect(r.stderr).toContain('hint: check the name with `apt-cache search`');
    expect(r.outEntries).toEqual([]);
  });

  it('a registry that is down', async () => {
    const host = `127.0.0.1:${await freePort()}`;
    const r = await buildWithKernel('down', `{ oci: "${host}/kernel:1", insecure: true }`);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`error: oci:${host}/kernel:1: .*cannot connect`));
    expect(r.stderr).toMatch(/hint: is the registry running/);
    expect(r.outEntries).toEqual([]);
  });

  it('plain HTTP to a registry that is not on this machine is refused', async () => {
    const r = await buildWithKernel('remote', '{ oci: "registry.example.com/kernel:1", insecure: true }');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/error: oci:registry\.example\.com\/kernel:1: .*only allowed for a registry on this machine/);
    expect(r.outEntries).toEqual([]);
  });
});
