/**
 * Shows the build's steps as they run, with listr2 on a TTY and as plain lines otherwise (CI
 * logs), and records each step's time.
 */
export interface ProgressTask {
  name: string;
  run(log: (line: string) => void): Promise<void>;
}

export interface StepReport {
  timings: Record<string, number>;
}

export type ProgressMode = 'tty' | 'plain' | 'silent';

export function defaultProgressMode(): ProgressMode {
  return process.stderr.isTTY && !process.env.CI ? 'tty' : 'plain';
}

export async function runSteps(steps: readonly ProgressTask[], mode: ProgressMode): Promise<StepReport> {
  const timings: Record<string, number> = {};
  const timed = async (s: ProgressTask, log: (line: string) => void) => {
    const t0 = performance.now();
    await s.run(log);
    timings[s.name] = Math.round(performance.now() - t0);
  };
  if (mode === 'tty') {
    const { Listr } = await import('listr2'); // only a terminal needs it: CI logs and --json start faster
    const list = new Listr(
      steps.map((s) => ({
        title: s.name,
        task: async (_: unknown, task: { output: string; title: string }) => {
          await timed(s, (line) => {
            task.output = line;
          });
          task.title = `${s.name} (${timings[s.name]} ms)`;
        },
      })),
      { concurrent: false, exitOnError: true, rendererOptions: { collapseErrors: false } },
    );
    await list.run();
  } else {
    for (const s of steps) {
      const log = mode === 'plain' ? (line: string) => process.stderr.write(`  ${s.name}: ${line}\n`) : () => {};
      if (mode === 'plain') process.stderr.write(`[ossify] ${s.name}\n`);
      await timed(s, log);
      if (mode === 'plain') process.stderr.write(`[ossify] ${s.name} done in ${timings[s.name]} ms\n`);
    }
  }
  return { timings };
}
