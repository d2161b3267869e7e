import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { describe, expect, it, vi } from 'vitest';
import { registerSchemaCommand } from '../../builder/commands/schema.ts';
import { PROFILE_SCHEMA_ID, profileJsonSchema, profileJsonSchemaText } from '../../builder/profile/schema.ts';

const SCHEMA_FILE = fileURLToPath(new URL('../../profiles/schema.json', import.meta.url));

describe('profile JSON Schema', () => {
  it('profiles/schema.json is up to date', async () => {
    const onDisk = await readFile(SCHEMA_FILE, 'utf8').catch(() => '(missing)');
    expect(onDisk, 'profiles/schema.json is stale: run `npm run schema`').toBe(profileJsonSchemaText());
  });

  it('has an $id and a title, and describes the profile keys', () => {
    const s = profileJsonSchema();
    expect(s.$id).toBe(PROFILE_SCHEMA_ID);
    expect(s.title).toBe('ossify build profile');
    expect(s.$schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(Object.keys(s.properties as object)).toEqual(expect.arrayContaining(['name', 'version', 'extends', 'kernel', 'rootfs']));
    expect(profileJsonSchemaText()).toMatch(/^\{\n {2}"\$schema"[^]*\}\n$/);
  });

  it('`ossify schema` prints it and -o writes it', async () => {
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    const dir = await mkdtemp(join(tmpdir(), 'ossify-schema-'));
    try {
      const program = new Command().exitOverride();
      registerSchemaCommand(program);
      await program.parseAsync(['schema'], { from: 'user' });
      expect(out.join('')).toBe(profileJsonSchemaText());
      const target = join(dir, 'sub', 'schema.json');
      await program.parseAsync(['schema', '-o', target], { from: 'user' });
      expect(await readFile(target, 'utf8')).toBe(profileJsonSchemaText());
    } finally {
      spy.mockRestore();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
