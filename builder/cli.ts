import { Command, CommanderError } from 'commander';
import { OssifyError } from './util/errors.ts';
import { packageInfo } from './util/package-info.ts';

type Register = (program: Command) => unknown;

/**
 * Every command, in --help order, loaded on demand: `ossify build` loads the build's code and
 * not the registry client's or the installer's, so start-up stays short.
 */
const COMMANDS: [name: string, load: () => Promise<Register>][] = [
  ['build', async () => (await import('./commands/build.ts')).registerBuildCommand],
  ['validate', async () => (await import('./commands/validate.ts')).registerValidateCommand],
  ['schema', async () => (await import('./commands/schema.ts')).registerSchemaCommand],
  ['run', async () => (await import('./commands/run.ts')).registerRunCommand],
  ['squashfs', async () => (await import('./commands/squashfs.ts')).registerSquashfsCommand],
  ['inspect', async () => (await import('./commands/inspect.ts')).registerInspectCommand],
  ['push', async () => (await import('./commands/push.ts')).registerPushCommand],
  ['pull', async () => (await import('./commands/pull.ts')).registerPullCommand],
  ['lock', async () => (await import('./commands/lock.ts')).registerLockCommand],
  ['install', async () => (await import('./commands/install.ts')).registerInstallCommand],
  ['upgrade', async () => (await import('./commands/upgrade.ts')).registerUpgradeCommand],
  ['status', async () => (await import('./commands/status.ts')).registerStatusCommand],
  ['rollback', async () => (await import('./commands/rollback.ts')).registerRollbackCommand],
  ['sign', async () => (await import('./commands/sign.ts')).registerSignCommand],
  ['verify', async () => (await import('./commands/verify.ts')).registerVerifyCommand],
  ['keygen', async () => (await import('./commands/keygen.ts')).registerKeygenCommand],
  ['cache', async () => (await import('./commands/cache.ts')).registerCacheCommand],
  ['plan', async () => (await import('./commands/plan.ts')).registerPlanCommand],
  ['iso', async () => (await import('./commands/iso.ts')).registerIsoCommand],
];

/** The CLI only parses arguments and calls into the library; exit codes: 0 ok, 1 failed, 2 bad usage or input. */
export async function makeProgram(argv: readonly string[] = []): Promise<Command> {
  const program = new Command('ossify')
    .description('build immutable, reproducible A/B OS images')
    .version(packageInfo().version)
    .showHelpAfterError()
    .exitOverride();
  // Only the command named on the command line, when it names one; else all (for --help and errors).
  const named = COMMANDS.filter(([name]) => name === argv[2]);
  const versionOnly = argv[2] === '--version' || argv[2] === '-V';
  for (const [, load] of named.length || versionOnly ? named : COMMANDS) (await load())(program);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await (await makeProgram(argv)).parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here too, with exit code 0
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof OssifyError) {
      process.stderr.write(`error: ${err.message}\n`);
      if (err.hint) for (const line of err.hint.split('\n')) process.stderr.write(`hint: ${line}\n`);
      return err.exitCode;
    }
    process.stderr.write(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv);
