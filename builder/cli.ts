import { Command, CommanderError } from 'commander';
import { OssifyError } from './util/errors.ts';
import { packageInfo } from './util/package-info.ts';
import { registerBuildCommand } from './commands/build.ts';
import { registerRunCommand } from './commands/run.ts';
import { registerValidateCommand } from './commands/validate.ts';
import { registerSchemaCommand } from './commands/schema.ts';
import { registerSquashfsCommand } from './commands/squashfs.ts';
import { registerInspectCommand } from './commands/inspect.ts';
import { registerPushCommand } from './commands/push.ts';
import { registerPullCommand } from './commands/pull.ts';
import { registerLockCommand } from './commands/lock.ts';
import { registerInstallCommand } from './commands/install.ts';
import { registerUpgradeCommand } from './commands/upgrade.ts';
import { registerStatusCommand } from './commands/status.ts';
import { registerRollbackCommand } from './commands/rollback.ts';
import { registerSignCommand } from './commands/sign.ts';
import { registerVerifyCommand } from './commands/verify.ts';
import { registerKeygenCommand } from './commands/keygen.ts';
import { registerCacheCommand } from './commands/cache.ts';
import { registerPlanCommand } from './commands/plan.ts';


/** The CLI only parses arguments and calls into the library; exit codes: 0 ok, 1 failed, 2 bad usage or input. */
export function makeProgram(): Command {
  const program = new Command('ossify')
    .description('build immutable, reproducible A/B OS images')
    .version(packageInfo().version)
    .showHelpAfterError()
    .exitOverride();
  for (const register of [
    registerBuildCommand,
    registerValidateCommand,
    registerSchemaCommand,
    registerRunCommand,
    registerSquashfsCommand,
    registerInspectCommand,
    registerPushCommand,
    registerPullCommand,
    registerLockCommand,
    registerInstallCommand,
    registerUpgradeCommand,
    registerStatusCommand,
    registerRollbackCommand,
    registerSignCommand,
    registerVerifyCommand,
    registerKeygenCommand,
    registerCacheCommand,
    registerPlanCommand,
  ]) {
    register(program);
  }
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await makeProgram().parseAsync(argv);
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
