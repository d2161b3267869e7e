import { parseUkiFileName, ukiFileName, type Slot } from '../boot/entries.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { describeCounting, otherSlot, readBootState, type BootState } from './boot-state.ts';
import { openDisk } from './disk.ts';
import { cleanEsp, openEsp } from './esp.ts';
import { probeLayout } from './layout.ts';
import { runInstallerSteps, type InstallerStep } from './steps.ts';

/**
 * Rollback: make the other slot boot next, if its release is known good (its entry was
 * blessed). Its entry gets the highest generation; the file keeps its name and only its
 * content changes, through one directory-entry write (FatEditor.replaceFile), so a kill
 * leaves either the old order or the new one. A unified kernel image cannot change (it is
 * signed, and its generation is in its name): it is renamed to the new generation instead,
 * `ossify-<gen>-<slot>….efi`, in place, one directory-entry write. Partitions are never written.
 */
export interface RollbackOptions {
  disk: string;
  /** Roll back even to a slot whose release has not been proven to boot. */
  force?: boolean;
  log?: (line: string) => void;
  env?: NodeJS.ProcessEnv;
}

export interface RollbackResult {
  from: Slot;
  to: Slot;
  entryFile: string;
  generation: number;
}

/** The entry text with its generation (the number leading `version`) replaced. */
export function withGeneration(text: string, generation: number): string {
  let seen = false;
  const out = text.replace(/^(\s*version\s+)(\d+)(-?.*)$/m, (_m, pre: string, _g: string, rest: string) => {
    seen = true;
    return `${pre}${generation}${rest}`;
  });
  if (!seen) throw new OssifyError('the entry has no version line starting with a generation number; it was not written by ossify');
  return out;
}

interface Ctx {
  state: BootState;
  from: Slot;
  to: Slot;
  generation: number;
  entryFile: string;
}

export async function rollback(opts: RollbackOptions): Promise<RollbackResult> {
  const log = opts.log ?? (() => {});
  const disk = await openDisk(opts.disk, { write: true });
  try {
    const layout = await probeLayout(disk);
    const esp = await openEsp(disk, layout);
    const state = await readBootState(esp);
    if (!state.next) throw new InputError(`${opts.disk} has no boot entries: nothing boots, so there is nothing to roll back from`);
    const from = state.next;
    const to = otherSlot(from);
    const target = state.slots[to];
    if (!target.entry) throw new InputError(`slot ${to} has no boot entry: there is no release to roll back to`);
    const c = target.entry.counting;
    if (c.state !== 'good' && !opts.force) {
      throw new InputError(`slot ${to} (${target.record?.version ?? 'unknown release'}) is ${describeCounting(c)}: it has not been proven to boot`, {
        hint: c.state === 'bad' ? 'upgrade it with a working release instead' : 'pass --force to make it boot next anyway',
      });
    }
    disk.restrictWrites([{ ...layout.esp, label: 'ESP' }]);
    const ctx: Ctx = { state, from, to, generation: state.maxGeneration + 1, entryFile: target.entry.file };
    const entry = target.entry;
    const steps: InstallerStep<Ctx>[] = [
      {
        name: 'clean-esp',
        async run(x, l) {
          for (const line of await cleanEsp(esp, x.state)) l(line);
        },
      },
      {
        name: 'switch',
        async run(x, l) {
          if (entry.kind === 'uki') {
            const parsed = parseUkiFileName(entry.file)!;
            const c = parsed.counting;
            const name = ukiFileName(parsed.slot, x.generation, c.state === 'good' ? undefined : { left: c.state === 'bad' ? 0 : c.left, done: c.done });
            await esp.rename(entry.path, name);
            x.entryFile = name;
            l(`${entry.file} is now ${name}`);
            return;
          }
          const st = await esp.stat(entry.path);
          await esp.replaceFile(entry.path, Buffer.from(withGeneration(entry.text, x.generation)), { mtime: st?.mtime ?? 0 });
          l(`${entry.file} now has generation ${x.generation}`);
        },
      },
    ];
    await runInstallerSteps(steps, ctx, disk, { log, ...(opts.env ? { env: opts.env } : {}) });
    const after = await readBootState(esp);
    if (after.next !== to) throw new OssifyError(`after the rollback slot ${after.next} still boots next; the entries are not ordered as ossify writes them`);
    return { from, to, entryFile: ctx.entryFile, generation: ctx.generation };
  } finally {
    await disk.close();
  }
}
