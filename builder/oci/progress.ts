import type { ProgressEvent } from './registry.ts';

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

const short = (d: string) => d.replace(/^sha256:/, '').slice(0, 12);

export interface ProgressReporter {
  onProgress(e: ProgressEvent): void;
  /** Clears a TTY status line before the command prints its result. */
  finish(): void;
}

/**
 * Progress of long transfers on stderr: one redrawn status line (bytes, rate) on a terminal,
 * plain lines otherwise — a line per blob and one every few seconds while a large one moves.
 */
export function progressReporter(stream: NodeJS.WriteStream = process.stderr, opts: { tty?: boolean; intervalMs?: number } = {}): ProgressReporter {
  const tty = opts.tty ?? stream.isTTY === true;
  const interval = opts.intervalMs ?? (tty ? 100 : 5000);
  const active = new Map<string, { size: number; done: number; started: number; op: string }>();
  let lastDraw = 0;
  let drawn = false;
  let total = 0;
  // The rate over the last few seconds: an average since the start would still be counting
  // the time spent building the image or waiting for a retry.
  const samples: { t: number; total: number }[] = [];
  const currentRate = () => {
    const now = Date.now();
    samples.push({ t: now, total });
    while (samples.length > 2 && now - samples[0]!.t > 3000) samples.shift();
    const first = samples[0]!;
    return `${formatBytes(Math.round((total - first.total) / Math.max(0.001, (now - first.t) / 1000)))}/s`;
  };
  const rate = (bytes: number, since: number) => `${formatBytes(Math.round(bytes / Math.max(0.001, (Date.now() - since) / 1000)))}/s`;

  const draw = (force = false) => {
    const now = Date.now();
    if (!force && now - lastDraw < interval) return;
    lastDraw = now;
    if (active.size === 0) return;
    let done = 0;
    let size = 0;
    for (const a of active.values()) {
      done += a.done;
      size += a.size;
    }
    const verb = [...active.values()][0]!.op === 'pull' ? 'pulling' : 'pushing';
    const line = `${verb} ${active.size} blob${active.size > 1 ? 's' : ''}: ${formatBytes(done)} / ${formatBytes(size)}  ${currentRate()}`;
    if (tty) {
      stream.write(`\r\x1b[K${line}`);
      drawn = true;
    } else stream.write(`${line}\n`);
  };

  return {
    onProgress(e) {
      switch (e.type) {
        case 'blob-start':
          active.set(e.digest, { size: e.size, done: 0, started: Date.now(), op: e.op });
          if (!tty) stream.write(`${e.op === 'pull' ? 'downloading' : 'uploading'} ${short(e.digest)} (${formatBytes(e.size)})\n`);
          break;
        case 'blob-progress': {
          const a = active.get(e.digest);
          if (a) {
            total += Math.max(0, e.done - a.done);
            a.done = e.done;
          }
          if (samples.length === 0) samples.push({ t: Date.now(), total: 0 });
          draw();
          break;
        }
        case 'blob-done': {
          const a = active.get(e.digest);
          active.delete(e.digest);
          const what =
            e.how === 'exists' ? 'already in the registry' : e.how === 'mounted' ? `mounted from ${e.from}` : `${e.how} ${formatBytes(e.size)}${a ? ` at ${rate(e.size, a.started)}` : ''}`;
          if (tty && drawn) stream.write('\r\x1b[K');
          stream.write(`${short(e.digest)}: ${what}\n`);
          draw(true);
          break;
        }
        case 'retry':
          if (tty && drawn) stream.write('\r\x1b[K');
          stream.write(`retrying ${e.what} in ${Math.round(e.delayMs)} ms (attempt ${e.attempt}): ${e.error}\n`);
          break;
      }
    },
    finish() {
      if (tty && drawn) stream.write('\r\x1b[K');
      drawn = false;
    },
  };
}
