import type { BenchRow } from './types.ts';

/**
 * `npm run bench`: every benchmark prints ossify / peer ratios measured in this run on this
 * machine. Select some with `npm run bench -- squashfs push`.
 */
const suites: Record<string, () => Promise<BenchRow[]>> = {
  squashfs: async () => (await import('./squashfs.ts')).benchSquashfs(),
  push: async () => (await import('./push.ts')).benchPush(),
  fleet: async () => (await import('./fleet.ts')).benchFleet(),
  build: async () => (await import('./build.ts')).benchBuild(),
  formats: async () => (await import('./formats.ts')).benchFormats(),
  iso: async () => (await import('./iso.ts')).benchIso(),
  'real-os': async () => (await import('./real-os.ts')).benchRealOs(),
};

const wanted = process.argv.slice(2);
const selected = wanted.length ? wanted : Object.keys(suites);
let failed = false;
for (const name of selected) {
  const suite = suites[name];
  if (!suite) {
    process.stderr.write(`unknown benchmark ${name}; have: ${Object.keys(suites).join(', ')}\n`);
    process.exitCode = 2;
    continue;
  }
  try {
    const rows = await suite();
    process.stdout.write(`\n## ${name}\n`);
    for (const r of rows) {
      process.stdout.write(
        `${r.name.padEnd(96)} ossify ${fmt(r.ours)} ${r.unit.padEnd(4)} peer ${fmt(r.theirs)} ${r.unit.padEnd(4)} ratio ${r.ratio.toFixed(3)}\n`,
      );
    }
  } catch (err) {
    failed = true;
    process.stderr.write(`benchmark ${name} failed: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}
if (failed) process.exitCode = 1;

function fmt(n: number): string {
  return (n >= 100 ? n.toFixed(0) : n.toFixed(3)).padStart(10);
}
