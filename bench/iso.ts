import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readIso, writeIso } from '../builder/formats/iso9660.ts';
import { hostFileContent } from '../builder/tree/content.ts';
import { derivedGuid } from '../builder/util/guid.ts';
import { fileHandleSink } from '../builder/util/sink.ts';
import type { BenchRow } from './types.ts';

/**
 * The installer ISO of the default build, against xorriso on the same input, in one run
 * (median of REPS, interleaved):
 *
 * - mastering: the ISO 9660 image with its El Torito EFI entry and hybrid GPT from the same
 *   two files (the FAT boot image and RELEASE.ENV, taken out of ossify's ISO, untimed), by
 *   `writeIso` in this process against `xorriso -as mkisofs -e BOOT/EFI.IMG -no-emul-boot
 *   -efi-boot-part --efi-boot-image`;
 * - whole: `ossify iso OUTDIR` (the CLI: the payload from disk.raw, the cpio archives, the
 *   FAT image, the ISO) against what a script would run from the same ESP files already staged
 *   (untimed): `mkfs.vfat -C` + `mcopy -s` + that xorriso. The host side skips the payload
 *   scan of the 674 MiB disk.raw and Node's start-up, so this row favours it.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'ossify.js');
const CACHE = join(ROOT, 'out', 'cache');
const REPS = Number(process.env.OSSIFY_BENCH_REPS ?? 3);
const log = (line: string) => process.stderr.write(`[iso] ${line}\n`);

function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env, maxBuffer: 1 << 28 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message} (install it: see scripts/host-packages.txt)`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${String(r.stderr).slice(0, 2000)}`);
}

function timed(f: () => void): number {
  const t0 = performance.now();
  f();
  return (performance.now() - t0) / 1000;
}

async function timedAsync(f: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await f();
  return (performance.now() - t0) / 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function benchIso(): Promise<BenchRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'ossify-bench-iso-'));
  try {
    log('building profiles/default.yaml (untimed)');
    const b = spawnSync('node', [BIN, 'build', join(ROOT, 'profiles', 'default.yaml'), '--out', join(work, 'out'), '--cache-dir', CACHE, '--json'], { encoding: 'utf8', maxBuffer: 1 << 28 });
    if (b.status !== 0) throw new Error(`ossify build failed: ${b.stderr}`);
    const outDir = (JSON.parse(b.stdout) as { outDir: string }).outDir;
    sh('node', [BIN, 'iso', outDir, '-o', join(work, 'first.iso')]);

    // The peer's input: ossify's boot image and RELEASE.ENV, and the ESP's files staged.
    const bytes = readFileSync(join(work, 'first.iso'));
    const vol = await readIso(async (o, n) => bytes.subarray(o, o + n));
    const stage = join(work, 'stage');
    mkdirSync(join(stage, 'BOOT'), { recursive: true });
    for (const e of vol.entries.filter((x) => !x.isDir)) writeFileSync(join(stage, e.path), bytes.subarray(e.block * 2048, e.block * 2048 + e.size));
    const efi = join(stage, 'BOOT', 'EFI.IMG');
    const espFiles = join(work, 'esp');
    mkdirSync(espFiles);
    sh('mcopy', ['-s', '-n', '-i', efi, '::/EFI', '::/loader', '::/ossify', espFiles], { ...process.env, MTOOLS_SKIP_CHECK: '1' });
    const efiSize = statSync(efi).size;
    const volumeId = vol.volumeId;

    const xorriso = (src: string, out: string) =>
      sh('xorriso', ['-as', 'mkisofs', '-quiet', '-o', out, '-V', volumeId, '-e', 'BOOT/EFI.IMG', '-no-emul-boot', '-efi-boot-part', '--efi-boot-image', src]);

    const ours: number[] = [];
    const theirs: number[] = [];
    const oursWhole: number[] = [];
    const theirsWhole: number[] = [];
    for (let i = 0; i < REPS; i++) {
      ours.push(
        await timedAsync(async () => {
          const fh = await open(join(work, 'ours.iso'), 'w');
          try {
            await writeIso(
              {
                volumeId,
                epoch: 1_700_000_000,
                efiBootImage: 'BOOT/EFI.IMG',
                diskGuid: derivedGuid('bench', 'disk'),
                espGuid: derivedGuid('bench', 'esp'),
                files: vol.entries.filter((x) => !x.isDir).map((e) => ({ path: e.path, content: hostFileContent(join(stage, e.path), e.size) })),
              },
              fileHandleSink(fh),
            );
          } finally {
            await fh.close();
          }
        }),
      );
      theirs.push(timed(() => xorriso(stage, join(work, 'theirs.iso'))));
      oursWhole.push(timed(() => sh('node', [BIN, 'iso', outDir, '-o', join(work, 'whole.iso')])));
      theirsWhole.push(
        timed(() => {
          const s2 = join(work, 'stage2');
          rmSync(s2, { recursive: true, force: true });
          mkdirSync(join(s2, 'BOOT'), { recursive: true });
          writeFileSync(join(s2, 'RELEASE.ENV'), readFileSync(join(stage, 'RELEASE.ENV')));
          const img = join(s2, 'BOOT', 'EFI.IMG');
          sh('mkfs.vfat', ['-C', '-F', '32', '-S', '512', '-s', '1', '-n', 'OSSIFY-ISO', img, String(efiSize / 1024)]);
          sh('mcopy', ['-s', '-i', img, join(espFiles, 'EFI'), join(espFiles, 'loader'), join(espFiles, 'ossify'), '::/'], { ...process.env, MTOOLS_SKIP_CHECK: '1' });
          xorriso(s2, join(work, 'theirs-whole.iso'));
        }),
      );
      log(`rep ${i + 1}: mastering ${ours[i]!.toFixed(3)} s vs xorriso ${theirs[i]!.toFixed(3)} s; whole ${oursWhole[i]!.toFixed(3)} s vs mkfs.vfat+mcopy+xorriso ${theirsWhole[i]!.toFixed(3)} s`);
    }
    const sizeOurs = statSync(join(work, 'ours.iso')).size;
    const sizeTheirs = statSync(join(work, 'theirs.iso')).size;
    const row = (name: string, a: number, b: number, unit: string): BenchRow => ({ name, ours: a, theirs: b, ratio: a / b, unit });
    return [
      row(`ISO mastering of the default installer (${(efiSize / (1 << 20)).toFixed(0)} MiB EFI image), writeIso vs xorriso`, median(ours), median(theirs), 's'),
      row('ISO image size, writeIso vs xorriso', sizeOurs, sizeTheirs, 'B'),
      row('installer ISO from a build, ossify iso vs mkfs.vfat + mcopy + xorriso (ESP files staged)', median(oursWhole), median(theirsWhole), 's'),
    ];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
