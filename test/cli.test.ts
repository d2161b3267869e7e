import { describe, expect, it } from 'vitest';
import { ossify } from './helpers/cli.ts';

describe('the ossify CLI', () => {
  it('lists every command in --help and exits 0', async () => {
    const r = await ossify(['--help']);
    expect(r.exitCode).toBe(0);
    for (const cmd of ['build', 'validate', 'schema', 'run', 'squashfs', 'inspect', 'push', 'pull']) {
      expect(r.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, 'm'));
    }
  });

  it('has --help on every command', async () => {
    const top = await ossify(['--help']);
    const commands = [...top.stdout.matchAll(/^ {2}([a-z-]+) /gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    expect(commands.length).toBeGreaterThanOrEqual(8);
    for (const cmd of commands) {
      const r = await ossify([cmd, '--help']);
      expect(r.exitCode, `${cmd} --help`).toBe(0);
      expect(r.stdout).toContain(`Usage: ossify ${cmd}`);
    }
  }, 120_000);

  it('exits 2 on bad usage', async () => {
    expect((await ossify(['no-such-command'])).exitCode).toBe(2);
    expect((await ossify(['build'])).exitCode).toBe(2);
    expect((await ossify(['build', 'profiles/default.yaml', '--no-such-flag'])).exitCode).toBe(2);
  });

  it('exits 2 naming the file when a profile does not exist', async () => {
    const r = await ossify(['validate', 'does/not/exist.yaml']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('does/not/exist.yaml');
  });
});
