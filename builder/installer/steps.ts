import { InputError } from '../util/errors.ts';

/**
 * Install and upgrade as flat lists of named steps. Each step ends with its writes fsynced,
 * so "killed between steps" and "killed inside a step" are the only two cases the
 * crash-safety argument has to cover (see upgrade.ts).
 *
 * Test hook: `OSSIFY_TEST_CRASH_AT=<step>` SIGKILLs this process just before that step
 * starts, `<step>:<bytes>` once the step has written at least that many bytes to the disk,
 * and `end` after the last step. It exists so the crash tests can kill the installer at
 * exact, repeatable points; nothing else reads it.
 */
export const CRASH_ENV = 'OSSIFY_TEST_CRASH_AT';

export interface InstallerStep<C> {
  name: string;
  /** Skipped (not run, no hook) when this returns false. */
  when?: (ctx: C) => boolean;
  run(ctx: C, log: (line: string) => void): Promise<void>;
}

interface CrashPoint {
  step: string;
  bytes: number | undefined;
}

export function parseCrashPoint(value: string | undefined): CrashPoint | undefined {
  if (!value) return undefined;
  const m = /^([a-z-]+)(?::(\d+))?$/.exec(value);
  if (!m) throw new InputError(`${CRASH_ENV}=${value} is not <step> or <step>:<bytes>`);
  return { step: m[1]!, bytes: m[2] === undefined ? undefined : Number(m[2]) };
}

function crash(): never {
  process.kill(process.pid, 'SIGKILL');
  // SIGKILL to oneself is delivered before kill() returns to user space; this is never reached.
  throw new Error('SIGKILL did not stop the process');
}

export interface StepRunOptions {
  log: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

/** Where the runner learns how many bytes a step has written (a Disk, or nothing). */
export interface WriteMeter {
  onWrite: ((bytes: number) => void) | undefined;
}

export async function runInstallerSteps<C>(steps: InstallerStep<C>[], ctx: C, disk: WriteMeter, opts: StepRunOptions): Promise<Record<string, number>> {
  const point = parseCrashPoint((opts.env ?? process.env)[CRASH_ENV]);
  if (point && point.step !== 'end' && !steps.some((s) => s.name === point.step)) {
    throw new InputError(`${CRASH_ENV}: no step named ${point.step} (steps: ${steps.map((s) => s.name).join(', ')}, end)`);
  }
  const timings: Record<string, number> = {};
  for (const s of steps) {
    if (s.when && !s.when(ctx)) continue;
    if (point?.step === s.name && point.bytes === undefined) crash();
    let written = 0;
    disk.onWrite = (n) => {
      written += n;
      if (point?.step === s.name && point.bytes !== undefined && written >= point.bytes) crash();
    };
    const t0 = performance.now();
    try {
      await s.run(ctx, (line) => opts.log(`${s.name}: ${line}`));
    } finally {
      disk.onWrite = undefined;
    }
    timings[s.name] = Math.round(performance.now() - t0);
  }
  if (point?.step === 'end') crash();
  return timings;
}
