import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import fc from 'fast-check';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { registerValidateCommand } from '../../builder/commands/validate.ts';
import { ProfileError } from '../../builder/profile/errors.ts';
import { loadProfile } from '../../builder/profile/load.ts';
import { InputError } from '../../builder/util/errors.ts';
import { prng } from '../helpers/prng.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const FIX = 'test/fixtures/profiles';
const CHAIN = join(ROOT, FIX, 'chain');

const temps: string[] = [];
async function tempDir(prefix = 'ossify-profile-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  temps.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(temps.map((d) => rm(d, { recursive: true, force: true })));
});

/** Loads a fixture (relative to the repo root, as a user in the checkout would type it) expecting it to fail. */
async function failure(rel: string, env: NodeJS.ProcessEnv = {}): Promise<ProfileError> {
  const err = await loadProfile(rel, { cwd: ROOT, env }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ProfileError);
  return err as ProfileError;
}

const lines = (e: Error) => e.message.split('\n');

describe('profile errors: file:line:column, key path, hint', () => {
  it('is an InputError, so the CLI exits 2', async () => {
    const e = await failure(`${FIX}/errors/unknown-key.yaml`);
    expect(e).toBeInstanceOf(InputError);
    expect(e.exitCode).toBe(2);
  });

  it('YAML syntax', async () => {
    const e = await failure(`${FIX}/errors/syntax.yaml`);
    expect(lines(e)).toEqual([
      `${FIX}/errors/syntax.yaml:5:3: YAML syntax error: Flow map in block collection must be sufficiently indented and end with a }`,
    ]);
    // No code frame or other trailing noise from the YAML library.
    expect(e.message).not.toMatch(/\n\s*\^|at line/);
    expect(e.hint).toMatch(/closed/);
  });

  it('unknown key, with a did-you-mean from the allowed keys', async () => {
    const e = await failure(`${FIX}/errors/unknown-key.yaml`);
    expect(lines(e)).toEqual([`${FIX}/errors/unknown-key.yaml:10:7: unknown key "dirr" at rootfs.inputs[1].dirr`]);
    expect(e.hint).toBe('unknown key "dirr"; did you mean "dir"?');
    expect(e.issues).toEqual([
      { file: `${FIX}/errors/unknown-key.yaml`, line: 10, column: 7, path: 'rootfs.inputs[1].dirr', message: 'unknown key "dirr"', hint: 'unknown key "dirr"; did you mean "dir"?' },
    ]);
  });

  it('wrong type (and YAML numbers that were meant as strings)', async () => {
    const e = await failure(`${FIX}/errors/wrong-type.yaml`);
    expect(lines(e)).toEqual([
      `${FIX}/errors/wrong-type.yaml:2:10: expected a string, got the number 1.0 at version`,
      `${FIX}/errors/wrong-type.yaml:5:12: expected a list, got the string "squashfs" at kernel.modules`,
    ]);
    expect(e.issues[0]!.hint).toBe('quote it to make it a string: version: "1.0"');
  });

  it('an initramfs level the compressor does not have names its line and the range', async () => {
    const e = await failure(`${FIX}/errors/initramfs-level.yaml`);
    expect(lines(e)[0]).toMatch(new RegExp(`^${FIX}/errors/initramfs-level.yaml:8:10: `));
    expect(e.hint).toContain('initramfs.level must be at most 9 for gzip (levels 10-19 are zstd\'s)');
  });

  it('bad enum value lists the allowed values', async () => {
    const e = await failure(`${FIX}/errors/bad-enum.yaml`);
    expect(lines(e)).toEqual([`${FIX}/errors/bad-enum.yaml:11:18: invalid value "zstdd" at rootfs.squashfs.compression`]);
    expect(e.hint).toBe('rootfs.squashfs.compression must be one of: gzip, zstd, xz, none; did you mean "zstd"?');
  });

  it('regex failures say what the value must look like', async () => {
    const e = await failure(`${FIX}/errors/regex.yaml`);
    expect(lines(e)).toEqual([
      `${FIX}/errors/regex.yaml:1:7: invalid value "Bad_Name!" at name`,
      `${FIX}/errors/regex.yaml:11:8: invalid value "12 parsecs" at disk.esp`,
    ]);
    expect(e.issues[0]!.hint).toMatch(/^name must be lowercase letters/);
    expect(e.issues[1]!.hint).toMatch(/^disk\.esp: A size in bytes/);
  });

  it('missing keys point at the mapping they are missing from', async () => {
    const e = await failure(`${FIX}/errors/missing-key.yaml`);
    expect(lines(e)).toEqual([
      `${FIX}/errors/missing-key.yaml:2:1: missing required key "version" at version`,
      `${FIX}/errors/missing-key.yaml:4:3: missing required key "input" at kernel.input`,
    ]);
    expect(e.issues[1]!.hint).toMatch(/^add "input:" under kernel/);
  });

  it('missing extends file is reported at the extends value', async () => {
    const e = await failure(`${FIX}/errors/missing-extends.yaml`);
    expect(lines(e)).toEqual([
      `${FIX}/errors/missing-extends.yaml:2:10: cannot read extended profile "${FIX}/errors/no-such-base.yaml": no such file at extends`,
    ]);
  });

  it('an extends cycle is reported where it closes', async () => {
    const e = await failure(`${FIX}/errors/cycle-a.yaml`);
    const a = `${FIX}/errors/cycle-a.yaml`;
    const b = `${FIX}/errors/cycle-b.yaml`;
    expect(lines(e)).toEqual([`${b}:3:10: extends cycle: ${a} → ${b} → ${a} at extends`]);
  });

  it('errors in an extended file are located in that file, after the child’s', async () => {
    const e = await failure(`${FIX}/errors/child-of-bad.yaml`);
    expect(lines(e)).toEqual([
      `${FIX}/errors/child-of-bad.yaml:4:10: 0 is too small at boot.tries`,
      `${FIX}/errors/parent-with-errors.yaml:7:3: unknown key "compresion" at initramfs.compresion`,
      `${FIX}/errors/parent-with-errors.yaml:12:18: invalid value "lz4" at rootfs.squashfs.compression`,
    ]);
  });

  it('reports every issue at once, sorted by position', async () => {
    const e = await failure(`${FIX}/errors/many.yaml`);
    const f = `${FIX}/errors/many.yaml`;
    expect(lines(e)).toEqual([
      `${f}:3:7: invalid value "arm64" at arch`,
      `${f}:5:22: conflicting keys "dir" and "tar" at kernel.input.tar`,
      `${f}:10:11: too few items (0) at rootfs.inputs`,
      `${f}:11:26: invalid value 5000 at rootfs.squashfs.blockSize`,
      `${f}:12:16: 10 is too large at boot.tries`,
    ]);
    expect(e.hint!.split('\n')).toHaveLength(5);
  });

  it('an unreadable top profile names the path as given', async () => {
    const e = await failure(`${FIX}/nope.yaml`);
    expect(lines(e)).toEqual([`${FIX}/nope.yaml: cannot read profile: no such file`]);
  });

  it('input kinds: a key of another kind, a typo of the kind, no kind at all', async () => {
    const dir = await tempDir();
    const p = join(dir, 'p.yaml');
    await writeFile(
      p,
      [
        'name: p',
        'version: "1"',
        'kernel: {input: {deb: linux}}',
        'initramfs: {busybox: busybox-static}',
        'rootfs:',
        '  inputs:',
        '    - {dir: ./a, depends: true}',
        '    - {tarr: x.tar}',
        '    - {include: ["*"]}',
        '',
      ].join('\n'),
    );
    const e = await loadProfile(p, { env: {} }).catch((x: ProfileError) => x);
    expect(lines(e as ProfileError)).toEqual([
      `${p}:4:22: expected a mapping, got the string "busybox-static" at initramfs.busybox`,
      `${p}:7:18: key "depends" does not apply to a dir input at rootfs.inputs[0].depends`,
      `${p}:8:8: unknown key "tarr" at rootfs.inputs[1].tarr`,
      `${p}:9:7: missing one of "deb", "dir", "tar", "oci", "files" at rootfs.inputs[2]`,
    ]);
  });

  it('an invalid SOURCE_DATE_EPOCH is an InputError', async () => {
    for (const bad of ['abc', '-5', '1.5', '1e9', '99999999999']) {
      const err = await loadProfile(join(CHAIN, 'base.yaml'), { env: { SOURCE_DATE_EPOCH: bad } }).catch((e: unknown) => e);
      expect(err, bad).toBeInstanceOf(InputError);
      expect((err as InputError).exitCode).toBe(2);
      expect((err as InputError).message).toContain('SOURCE_DATE_EPOCH');
    }
  });
});

describe('extends', () => {
  it('merges three levels: mappings deep, lists and scalars replaced', async () => {
    const l = await loadProfile(join(CHAIN, 'site', 'store.yaml'), { env: {} });
    expect(l.chain).toEqual([join(CHAIN, 'site', 'store.yaml'), join(CHAIN, 'mid.yaml'), join(CHAIN, 'base.yaml')]);
    const p = l.profile;
    expect(p.name).toBe('store-0042'); // level 3
    expect(p.version).toBe('1.0.0-s42');
    expect(p.kernel.cmdline).toBe('console=ttyS0 quiet'); // level 2 over level 1
    expect(p.kernel.modules).toEqual(['squashfs', 'virtio_blk']); // level 1
    expect(p.kernel.input).toEqual({ deb: 'linux-image-cloud-amd64', depends: ['linux-image-*'] });
    expect(p.rootfs.squashfs).toEqual({ compression: 'zstd', level: 19, blockSize: 131072 }); // deep merge + default
    expect(p.disk.root).toBe('512MiB');
    expect(p.epoch).toBe(1600000000);
    // The list is replaced, not appended; relative paths resolve against store.yaml's directory.
    expect(p.rootfs.inputs).toEqual([
      { dir: join(CHAIN, 'site', 'files') },
      { tar: join(CHAIN, 'site', 'extra.tar.gz') },
      { deb: ['busybox-static', join(CHAIN, 'site', 'debs', 'tool_1.0_amd64.deb')], depends: false },
    ]);
    // Switching an input's kind replaces it rather than merging {deb, dir}.
    expect(p.initramfs.busybox).toEqual({ dir: join(CHAIN, 'site', 'files') });
    expect(p).not.toHaveProperty('extends');
  });

  it('inherited relative paths stay relative to the file that declared them', async () => {
    const l = await loadProfile(join(CHAIN, 'site', 'inherits.yaml'), { env: {} });
    expect(l.profile.rootfs.inputs).toEqual([{ deb: 'busybox-static', depends: false }, { dir: join(CHAIN, 'overlays', 'base') }]);
  });

  it('a default-filled, valid profile', async () => {
    const l = await loadProfile(`${FIX}/valid.yaml`, { cwd: ROOT, env: {} });
    expect(l.file).toBe(join(ROOT, FIX, 'valid.yaml'));
    expect(l.chain).toEqual([l.file]);
    expect(l.profile.boot).toEqual({ loader: 'systemd-boot', systemdBoot: { deb: 'systemd-boot-efi', depends: false }, timeout: 0, tries: 3 });
    expect(l.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });
});

describe('digest', () => {
  async function copyChain(): Promise<string> {
    const d = join(await tempDir(), 'some', 'deeper', 'checkout');
    await mkdir(d, { recursive: true });
    await cp(CHAIN, d, { recursive: true });
    return d;
  }

  it('does not depend on the cwd or where the checkout lives', async () => {
    const [a, b] = [await copyChain(), await copyChain()];
    for (const top of ['site/store.yaml', 'site/inherits.yaml']) {
      const here = await loadProfile(join(CHAIN, top), { env: {} });
      const inA = await loadProfile(join(a, top), { cwd: a, env: {} });
      const inB = await loadProfile(join(b, 'site', '..', top), { cwd: '/', env: {} });
      const relB = await loadProfile(top, { cwd: b, env: {} });
      expect(inA.digest).toBe(here.digest);
      expect(inB.digest).toBe(here.digest);
      expect(relB.digest).toBe(here.digest);
      // …while the resolved paths do point into each copy.
      expect(JSON.stringify(inA.profile)).toContain(a);
      expect(JSON.stringify(inA.profile)).not.toContain(CHAIN);
    }
  });

  it('changes when a value changes', async () => {
    const a = await copyChain();
    const before = (await loadProfile(join(a, 'site/store.yaml'), { env: {} })).digest;
    const base = join(a, 'base.yaml');
    await writeFile(base, (await readFile(base, 'utf8')).replace('virtio_blk', 'virtio_net'));
    const after = (await loadProfile(join(a, 'site/store.yaml'), { env: {} })).digest;
    expect(after).not.toBe(before);
  });

  it('changes when a local path points elsewhere', async () => {
    const a = await copyChain();
    const before = (await loadProfile(join(a, 'site/store.yaml'), { env: {} })).digest;
    const store = join(a, 'site/store.yaml');
    await writeFile(store, (await readFile(store, 'utf8')).replace('- dir: files', '- dir: ../files'));
    expect((await loadProfile(store, { env: {} })).digest).not.toBe(before);
  });

  it('ignores $schema and how the settings are split across extends files', async () => {
    const a = await copyChain();
    const inherited = await loadProfile(join(a, 'site/inherits.yaml'), { env: {} });
    // The same settings written out flat in the same directory.
    const base = (await readFile(join(a, 'base.yaml'), 'utf8')).replace('name: base', 'name: inherits').replace('dir: overlays/base', 'dir: ../overlays/base');
    await writeFile(join(a, 'site/flat.yaml'), `$schema: ../../schema.json\n${base}`);
    const flat = await loadProfile(join(a, 'site/flat.yaml'), { env: {} });
    expect(flat.profile).toEqual(inherited.profile);
    expect(flat.digest).toBe(inherited.digest);
  });

  it('SOURCE_DATE_EPOCH overrides the epoch and is part of the digest', async () => {
    const file = join(CHAIN, 'base.yaml');
    const plain = await loadProfile(file, { env: {} });
    expect(plain.epoch).toBe(1600000000);
    const over = await loadProfile(file, { env: { SOURCE_DATE_EPOCH: '1700000000' } });
    expect(over.epoch).toBe(1700000000);
    expect(over.profile.epoch).toBe(1700000000);
    expect(over.digest).not.toBe(plain.digest);
    // Setting it to the profile's own value changes nothing.
    expect((await loadProfile(file, { env: { SOURCE_DATE_EPOCH: '1600000000' } })).digest).toBe(plain.digest);
    // Empty counts as unset.
    expect((await loadProfile(file, { env: { SOURCE_DATE_EPOCH: '' } })).epoch).toBe(1600000000);
  });

  it('property: independent of key order in the YAML', async () => {
    const word = fc.stringMatching(/^[a-z][a-z0-9_-]{0,10}$/);
    const relPath = fc.array(fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,8}$/), { minLength: 1, maxLength: 3 }).map((s) => s.join('/'));
    const input = fc.oneof(
      fc.record({ deb: fc.oneof(word, fc.array(word, { minLength: 1, maxLength: 3 })), depends: fc.oneof(fc.boolean(), fc.array(word, { maxLength: 2 })), include: fc.array(word, { maxLength: 2 }) }, { requiredKeys: ['deb'] }),
      fc.record({ dir: relPath, target: word }, { requiredKeys: ['dir'] }),
      fc.record({ tar: relPath.map((p) => `${p}.tar.gz`), exclude: fc.array(word, { maxLength: 2 }) }, { requiredKeys: ['tar'] }),
    );
    const profile = fc.record(
      {
        name: fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,12}$/),
        version: fc.stringMatching(/^[0-9A-Za-z][0-9A-Za-z.+_-]{0,8}$/),
        epoch: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        kernel: fc.record({ input, modules: fc.array(word, { maxLength: 4 }), cmdline: fc.string({ maxLength: 20 }) }, { requiredKeys: ['input'] }),
        initramfs: fc.record({ busybox: input, compression: fc.constantFrom('gzip', 'zstd', 'none') }, { requiredKeys: ['busybox'] }),
        rootfs: fc.record(
          {
            inputs: fc.array(input, { minLength: 1, maxLength: 4 }),
            allRoot: fc.boolean(),
            squashfs: fc.record({ compression: fc.constantFrom('gzip', 'zstd', 'xz', 'none'), level: fc.integer({ min: 1, max: 9 }), blockSize: fc.constantFrom(4096, 131072, 1048576) }, { requiredKeys: [] }),
          },
          { requiredKeys: ['inputs'] },
        ),
        boot: fc.record({ timeout: fc.nat(10), tries: fc.integer({ min: 1, max: 9 }) }, { requiredKeys: [] }),
        disk: fc.record({ esp: fc.constantFrom('256MiB', 300000000), root: fc.constantFrom('1G', '512 MiB') }, { requiredKeys: [] }),
      },
      { requiredKeys: ['name', 'version', 'kernel', 'initramfs', 'rootfs'] },
    );
    const dir = await tempDir();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(profile, fc.integer(), async (p, seed) => {
        const d = join(dir, String(n++));
        await mkdir(d);
        await writeFile(join(d, 'sorted.yaml'), stringify(p));
        await writeFile(join(d, 'shuffled.yaml'), stringify(shuffleKeys(p, prng(seed)), { collectionStyle: seed % 2 === 0 ? 'flow' : 'any' }));
        const x = await loadProfile(join(d, 'sorted.yaml'), { env: {} });
        const y = await loadProfile(join(d, 'shuffled.yaml'), { env: {} });
        expect(y.digest).toBe(x.digest);
      }),
      { numRuns: 40 },
    );
  });
});

describe('ossify validate', () => {
  async function run(args: string[]): Promise<string> {
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    try {
      const program = new Command().exitOverride();
      registerValidateCommand(program);
      await program.parseAsync(['validate', ...args], { from: 'user' });
    } finally {
      spy.mockRestore();
    }
    return out.join('');
  }

  it('prints name, version, digest and the resolved profile', async () => {
    const file = join(CHAIN, 'site', 'store.yaml');
    const l = await loadProfile(file);
    const text = await run([file]);
    expect(text).toContain('name:    store-0042\n');
    expect(text).toContain('version: 1.0.0-s42\n');
    expect(text).toContain(`digest:  ${l.digest}\n`);
    expect(text).toContain('compression: zstd');
    const json = JSON.parse(await run([file, '--json'])) as Record<string, unknown>;
    expect(json).toMatchObject({ name: 'store-0042', version: '1.0.0-s42', digest: l.digest, chain: l.chain });
    expect(json.profile).toEqual(l.profile);
  });

  it('throws the ProfileError for an invalid profile (the CLI maps it to exit 2)', async () => {
    await expect(run([join(ROOT, FIX, 'errors', 'bad-enum.yaml')])).rejects.toBeInstanceOf(ProfileError);
  });
});

describe('profiles/default.yaml', () => {
  it('validates', async () => {
    const l = await loadProfile('profiles/default.yaml', { cwd: ROOT, env: {} });
    expect(l.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(l.profile.rootfs.inputs.length).toBeGreaterThan(0);
  });
});


/** The same data with every mapping's keys in a random order (lists keep theirs: order matters there). */
function shuffleKeys(v: unknown, rnd: () => number): unknown {
  if (Array.isArray(v)) return v.map((x) => shuffleKeys(x, rnd));
  if (v === null || typeof v !== 'object') return v;
  const keys = Object.keys(v);
  for (let i = keys.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [keys[i], keys[j]] = [keys[j]!, keys[i]!];
  }
  return Object.fromEntries(keys.map((k) => [k, shuffleKeys((v as Record<string, unknown>)[k], rnd)]));
}
