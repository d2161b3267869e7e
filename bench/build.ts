import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { abLayout, diskSizeFor } from '../builder/disk/layout.ts';
import type { BuildRecord } from '../builder/release/build-json.ts';
import { DEFAULT_INITRAMFS_LEVEL } from '../builder/initramfs/build.ts';
import { loadProfile } from '../builder/profile/load.ts';
import { parseSize } from '../builder/profile/schema.ts';
import type { BenchRow } from './types.ts';

/**
 * DESIGN.md "Performance targets": a whole default build from a warm cache against the same
 * image made with host tools (mksquashfs + cpio + gzip/zstd + veritysetup + mkfs.vfat + mtools
 * + sgdisk + dd), timed in the same run on this machine. Each side runs REPS times,
 * interleaved, and the median counts: this machine is shared and noisy.
 *
 * "Warm cache" means: every input of profiles/default.yaml is already downloaded and verified
 * in the input cache (out/cache, shared with the other suites; one untimed build first makes
 * sure of it), but the stage cache is not used: the timed ossify run is the CLI,
 * `node bin/ossify.js build profiles/default.yaml --no-cache --cache-dir out/cache --json`
 * (BuildOptions.stageCache = false), so it does all of its work: reading and verifying the
 * cached packages, kernel and tree assembly, the module closure, the initramfs (cpio +
 * compression), the SBOM, the squashfs, dm-verity, the ESP, the GPT disk, the installer image
 * (OCI layout), the provenance and every artifact's digest. Its time is the child process's
 * wall time (Node start-up and tsx loading included, as a user running the CLI pays them).
 *
 * The host-tool side first unpacks every package of the build from the same input cache
 * (`dpkg-deb -x`, timed: a script must do it too), then makes the image from prepared trees
 * (untimed): the rootfs tree from ossify's own rootfs.squashfs (unsquashfs,
 * as root into a temporary directory), the initramfs tree from ossify's initramfs.img
 * (decompress + `cpio -i`), the ESP's files from ossify's disk (mtools `mcopy -s` at the ESP's
 * offset). It then runs, timed, what a shell-script build would:
 *
 * - `mksquashfs` with the profile's compressor, level and block size (and -all-root,
 *   -mkfs-time/-all-time at the profile's epoch, all cores);
 * - `veritysetup format` of the squashfs into a hash file when the profile turns verity on
 *   (same salt and block sizes as ossify's);
 * - `find | sort | cpio -o -H newc | gzip -9 -n` (or `zstd -19`: the level ossify uses for the
 *   profile's initramfs.compression), then the result copied into the ESP's staging directory
 *   in place of ossify's initrd;
 * - the disk: `dd` (count=0 seek=) for the sparse file, `sgdisk` for the GPT (ossify's partition
 *   offsets, sizes, types, labels and GUIDs), `mkfs.vfat -C -F 32` for the ESP image (same
 *   cluster size, hidden sectors, label and serial) and `mcopy -s -m` for its files, and
 *   `dd conv=notrunc,sparse` to place the ESP, the squashfs and the verity tree.
 *
 * `sgdisk` sleeps one second after writing (gdisk's DiskSync, so the kernel can reread a
 * partition table) and calls sync(): counted, as any script that uses it pays it.
 *
 * So the host side skips what ossify does beyond unpacking (verifying the packages, choosing
 * files, the module closure, the SBOM, the installer image, the digests): the comparison is
 * the target as written, and it favours the host tools.
 * Per-step times of both sides go to stderr.
 *
 * Rows: wall time, CPU time (user + system of the child processes, from /proc/self/stat's
 * cutime/cstime around each synchronously waited child) and the disk's allocated bytes.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'ossify.js');
const DEFAULT = join(ROOT, 'profiles', 'default.yaml');
const INPUTS = join(ROOT, 'out', 'cache');
const REPS = Number(process.env.OSSIFY_BENCH_REPS ?? 3);
const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

const log = (line: string) => process.stderr.write(`[build] ${line}\n`);

type Profile = Awaited<ReturnType<typeof loadProfile>>['profile'];

/** What the host-tool side starts from: ossify's outputs unpacked (untimed). */
interface Prepared {
  rootTree: string;
  initrdTree: string;
  espTree: string;
  /** Where ossify's initrd sits in the ESP (relative to espTree), replaced by the host's. */
  espInitrd: string | undefined;
  record: BuildRecord;
  diskGuid: string;
  diskSize: number;
  espSerial: string;
}

interface HostResult {
  seconds: number;
  cpu: number;
  steps: [string, number][];
  diskAllocated: number;
  /** What `veritysetup format` printed as the root hash, when the profile uses verity. */
  rootHash: string | undefined;
}

export async function benchBuild(): Promise<BenchRow[]> {
  if (process.platform !== 'linux') throw new Error('the build benchmark needs Linux (host tools, /proc)');
  if (process.getuid?.() !== 0) throw new Error('the build benchmark unpacks the initramfs (device nodes) for the host-tool side: run it as root');
  const loaded = await loadProfile(DEFAULT);
  const p = loaded.profile;
  checkHostTools(p);

  const work = mkdtempSync(join(tmpdir(), 'ossify-bench-build-'));
  const rows: BenchRow[] = [];
  try {
    // Untimed: the inputs downloaded and verified in out/cache, and the outputs to unpack.
    const warm = ossifyBuild(join(work, 'warm'));
    log(`warm-up build ${warm.seconds.toFixed(1)} s (inputs in ${relative(ROOT, INPUTS)})`);
    const prep = prepare(warm.outDir, warm.record, p, join(work, 'prepared'));

    const oursT: number[] = [];
    const theirsT: number[] = [];
    const oursCpu: number[] = [];
    const theirsCpu: number[] = [];
    let oursDisk = 0;
    let theirsDisk = 0;
    for (let i = 0; i < REPS; i++) {
      const outRoot = join(work, 'ours');
      rmSync(outRoot, { recursive: true, force: true });
      const ours = ossifyBuild(outRoot);
      if (JSON.stringify(ours.record.artifacts) !== JSON.stringify(warm.record.artifacts)) throw new Error('a --no-cache build gave other bytes than the warm-up build');
      oursT.push(ours.seconds);
      oursCpu.push(ours.cpu);
      oursDisk = allocated(join(ours.outDir, 'disk.raw'));
      const steps = Object.entries(ours.record.timings).filter(([, ms]) => ms > 0).map(([k, ms]) => `${k} ${(ms / 1000).toFixed(2)}`);
      log(`rep ${i + 1} ossify: ${ours.seconds.toFixed(2)} s wall, ${ours.cpu.toFixed(2)} s cpu; steps (s): ${steps.join(', ')}`);

      const dir = join(work, 'theirs');
      rmSync(dir, { recursive: true, force: true });
      const host = hostBuild(prep, p, loaded.epoch, dir);
      theirsT.push(host.seconds);
      theirsCpu.push(host.cpu);
      theirsDisk = host.diskAllocated;
      log(`rep ${i + 1} host tools: ${host.seconds.toFixed(2)} s wall, ${host.cpu.toFixed(2)} s cpu; steps (s): ${host.steps.map(([k, s]) => `${k} ${s.toFixed(2)}`).join(', ')}`);
      if (i === 0) checkHostDisk(join(dir, 'disk.raw'), join(ours.outDir, 'disk.raw'), prep, host.rootHash);
    }
    const label = `default (ossify --no-cache vs host tools)`;
    const row = (name: string, ours: number, theirs: number, unit: string) => rows.push({ name, ours, theirs, ratio: ours / theirs, unit });
    row(`build time ${label}`, median(oursT), median(theirsT), 's');
    row(`build cpu ${label}`, median(oursCpu), median(theirsCpu), 's');
    row(`build disk.raw allocated size ${label}`, oursDisk / 2 ** 20, theirsDisk / 2 ** 20, 'MiB');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return rows;
}

// ossify ------------------------------------------------------------------------------------

function ossifyBuild(outRoot: string): { seconds: number; cpu: number; outDir: string; record: BuildRecord } {
  const args = [BIN, 'build', DEFAULT, '--out', outRoot, '--cache-dir', INPUTS, '--no-cache', '--json'];
  const cpu0 = childCpu();
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, CI: '1' } });
  const seconds = (performance.now() - t0) / 1000;
  const cpu = childCpu() - cpu0;
  if (r.status !== 0) throw new Error(`ossify build failed (exit ${r.status}): ${r.stderr || r.error}`);
  const out = JSON.parse(r.stdout) as BuildRecord & { outDir: string; cache: Record<string, string> };
  const used = Object.entries(out.cache).filter(([, s]) => s !== 'off' && s !== 'run');
  if (used.length) throw new Error(`--no-cache build used the stage cache: ${used.map(([k, s]) => `${k}=${s}`).join(', ')}`);
  return { seconds, cpu, outDir: out.outDir, record: out };
}

// host tools --------------------------------------------------------------------------------

function checkHostTools(p: Profile): void {
  need('mksquashfs', 'squashfs-tools');
  need('unsquashfs', 'squashfs-tools');
  if (p.rootfs.verity) need('veritysetup', 'cryptsetup-bin');
  need('cpio', 'cpio');
  need('dpkg-deb', 'dpkg');
  if (p.initramfs.compression === 'gzip') need('gzip', 'gzip');
  if (p.initramfs.compression === 'zstd') need('zstd', 'zstd');
  need('mkfs.vfat', 'dosfstools');
  need('mcopy', 'mtools');
  need('minfo', 'mtools');
  need('sgdisk', 'gdisk');
  need('dd', 'coreutils');
}

/** Unpacks ossify's outputs into the trees the host tools start from. Untimed. */
function prepare(outDir: string, record: BuildRecord, p: Profile, dir: string): Prepared {
  if (p.boot.entries === 'uki' || p.boot.secureBoot) throw new Error('the build benchmark only knows Type #1 boot entries without Secure Boot (profiles/default.yaml)');
  const rootTree = join(dir, 'root');
  const initrdTree = join(dir, 'initrd');
  const espTree = join(dir, 'esp');
  for (const d of [dir, initrdTree, espTree]) mkdirSync(d, { recursive: true });
  run('unsquashfs', ['-d', rootTree, '-no-progress', '-quiet', join(outDir, 'rootfs.squashfs')]);
  const initrd = join(outDir, 'initramfs.img');
  const unpack: Record<string, string> = {
    gzip: 'gzip -dc "$1" | cpio -idm --quiet --no-absolute-filenames',
    zstd: 'zstd -dcq "$1" | cpio -idm --quiet --no-absolute-filenames',
    none: 'cpio -idm --quiet --no-absolute-filenames < "$1"',
  };
  run('sh', ['-c', unpack[p.initramfs.compression]!, 'sh', initrd], initrdTree);
  const esp = record.partitions.find((x) => x.label === 'ESP');
  if (!esp) throw new Error('build.json has no ESP partition');
  const espImage = `${join(outDir, 'disk.raw')}@@${esp.offset}`;
  run('mcopy', ['-s', '-n', '-m', '-i', espImage, '::/*', `${espTree}/`], undefined, MTOOLS_ENV);
  const serial = /serial number:\s*([0-9A-Fa-f]{8})/.exec(run('minfo', ['-i', espImage, '::'], undefined, MTOOLS_ENV))?.[1];
  if (!serial) throw new Error('minfo printed no serial number for the ESP');
  // The initrd on the ESP is ossify's initramfs.img: the host side puts its own there.
  const want = sha256(readFileSync(initrd));
  const espInitrd = walk(espTree).find((f) => statSync(f).size === statSync(initrd).size && sha256(readFileSync(f)) === want);
  if (!espInitrd) log('ossify\'s initramfs.img is not on the ESP; the host side copies the ESP files as they are');
  const layout = abLayout({ profileDigest: record.baseDigest ?? record.profileDigest, arch: record.arch, esp: parseSize(p.disk.esp), root: parseSize(p.disk.root), state: parseSize(p.disk.state) });
  return { rootTree, initrdTree, espTree, espInitrd: espInitrd && relative(espTree, espInitrd), record, diskGuid: layout.diskGuid, diskSize: diskSizeFor(layout), espSerial: serial };
}

/** The same image with host tools, each step timed. */
function hostBuild(prep: Prepared, p: Profile, epoch: number, dir: string): HostResult {
  mkdirSync(dir, { recursive: true });
  const steps: [string, number][] = [];
  let cpu = 0;
  const step = (name: string, cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) => {
    const c0 = childCpu();
    const t0 = performance.now();
    const out = run(cmd, args, opts.cwd, opts.env);
    steps.push([name, (performance.now() - t0) / 1000]);
    cpu += childCpu() - c0;
    return out;
  };
  // The ESP's files as the host build stages them: a copy made before the clock starts.
  const espStage = join(dir, 'esp-stage');
  run('cp', ['-a', prep.espTree, espStage]);

  const squashfs = join(dir, 'rootfs.squashfs');
  const verity = join(dir, 'rootfs.verity');
  const initrd = join(dir, 'initramfs.img');
  const espImg = join(dir, 'esp.img');
  const disk = join(dir, 'disk.raw');
  const parts = prep.record.partitions;
  const part = (label: string) => {
    const x = parts.find((q) => q.label === label);
    if (!x) throw new Error(`build.json has no ${label} partition`);
    return x;
  };
  const esp = part('ESP');
  const rootA = part('ROOT-A');

  const t0 = performance.now();
  // 0. Unpack the packages the image is made of, as any script must (dpkg-deb -x each .deb
  //    from the same input cache). The later steps still start from ossify's prepared trees.
  const debs = prep.record.sources.filter((src) => src.kind === 'deb');
  if (!debs.length) throw new Error('build.json lists no .deb sources');
  const t1 = performance.now();
  const c1 = childCpu();
  for (const d of debs) {
    if (!d.sha256) throw new Error(`build.json records no sha256 for the package ${d.name}`);
    mkdirSync(join(dir, 'debs', d.name), { recursive: true });
    run('dpkg-deb', ['-x', join(INPUTS, 'blobs', 'sha256', d.sha256), join(dir, 'debs', d.name)]);
  }
  steps.push([`dpkg-deb -x (${debs.length} packages)`, (performance.now() - t1) / 1000]);
  cpu += childCpu() - c1;
  // 1. The root filesystem.
  const s = p.rootfs.squashfs;
  const comp = s.compression === 'none' ? ['-noI', '-noD', '-noF', '-noX'] : ['-comp', s.compression, ...(s.level !== undefined && s.compression !== 'xz' ? ['-Xcompression-level', String(s.level)] : [])];
  step('mksquashfs', 'mksquashfs', [
    prep.rootTree, squashfs, ...comp, '-b', String(s.blockSize), ...(p.rootfs.allRoot ? ['-all-root'] : []),
    '-mkfs-time', String(epoch), '-all-time', String(epoch), '-no-xattrs', '-processors', String(availableParallelism()), '-noappend', '-quiet', '-no-progress',
  ]);
  // 2. Its dm-verity tree (mksquashfs pads the image to 4 KiB: whole data blocks).
  const v = prep.record.verity;
  let rootHash: string | undefined;
  if (p.rootfs.verity) {
    if (!v) throw new Error('the profile turns verity on but build.json has no verity record');
    rootHash = /Root hash:\s*([0-9a-f]+)/.exec(step('veritysetup', 'veritysetup', ['format', squashfs, verity, `--salt=${v.salt}`, `--data-block-size=${v.dataBlockSize}`, `--hash-block-size=${v.hashBlockSize}`, `--hash=${v.algorithm}`]))?.[1];
  }
  // 3. The initramfs, then onto the ESP.
  const level = p.initramfs.compression === 'none' ? 0 : (p.initramfs.level ?? DEFAULT_INITRAMFS_LEVEL[p.initramfs.compression]);
  const pack: Record<string, string> = {
    gzip: 'find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet | gzip -n "-$2" > "$1"',
    zstd: 'find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet | zstd -q "-$2" > "$1"',
    none: 'find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet > "$1"',
  };
  step(`cpio | ${p.initramfs.compression}${level ? ` -${level}` : ''}`, 'sh', ['-c', pack[p.initramfs.compression]!, 'sh', initrd, String(level)], { cwd: prep.initrdTree });
  if (prep.espInitrd) step('cp initrd', 'cp', [initrd, join(espStage, prep.espInitrd)]);
  // 4. The sparse disk and its GPT: ossify's partitions, types, labels and GUIDs.
  step('dd (sparse disk)', 'dd', ['if=/dev/null', `of=${disk}`, 'bs=1', 'count=0', `seek=${prep.diskSize}`, 'status=none']);
  const gpt = parts.flatMap((x, i) => {
    const n = i + 1;
    return ['-n', `${n}:${x.offset / 512}:${(x.offset + x.size) / 512 - 1}`, '-t', `${n}:${x.typeGuid}`, '-c', `${n}:${x.label}`, '-u', `${n}:${x.guid}`];
  });
  step('sgdisk', 'sgdisk', ['-o', '-U', prep.diskGuid, ...gpt, disk]);
  // 5. The ESP: FAT32 with ossify's geometry (512-byte clusters), label and serial, then its files.
  step('mkfs.vfat', 'mkfs.vfat', ['-C', '-F', '32', '-S', '512', '-s', '1', '-h', String(esp.offset / 512), '-i', prep.espSerial, '-n', 'OSSIFY-ESP', espImg, String(esp.size / 1024)]);
  const top = readdirSync(espStage).sort().map((f) => join(espStage, f));
  step('mcopy', 'mcopy', ['-s', '-m', '-i', espImg, ...top, '::/'], { env: MTOOLS_ENV });
  // 6. Everything into place.
  const place = (name: string, file: string, at: number) =>
    step(`dd ${name}`, 'dd', [`if=${file}`, `of=${disk}`, 'bs=4M', `seek=${at}`, 'oflag=seek_bytes', 'conv=notrunc,sparse', 'status=none']);
  place('esp', espImg, esp.offset);
  place('rootfs', squashfs, rootA.offset);
  if (v) place('verity', verity, rootA.offset + v.hashOffset);
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, cpu, steps, diskAllocated: allocated(disk), rootHash };
}

/** Untimed, once: the host-tool disk must be the same image in kind (same GPT, same ESP files, a root that verifies). */
function checkHostDisk(theirs: string, ours: string, prep: Prepared, rootHash: string | undefined): void {
  const table = (f: string) => run('sgdisk', ['-p', f]).split('\n').filter((l) => !l.includes(f)).join('\n');
  if (table(theirs) !== table(ours)) throw new Error(`the host-tool disk's GPT differs from ossify's:\n${table(theirs)}\n---\n${table(ours)}`);
  const esp = prep.record.partitions.find((x) => x.label === 'ESP')!;
  const list = (f: string) => run('mdir', ['-/', '-b', '-i', `${f}@@${esp.offset}`, '::/'], undefined, MTOOLS_ENV).split('\n').sort().join('\n');
  if (list(theirs) !== list(ours)) throw new Error(`the host-tool ESP lists other files than ossify's:\n${list(theirs)}\n---\n${list(ours)}`);
  const same = (name: string) => sha256(readFileSync(join(theirs, '..', name))) === prep.record.artifacts[name]?.sha256.replace(/^sha256:/, '');
  const notes = [`rootfs.squashfs ${same('rootfs.squashfs') ? 'identical to' : 'differs from'} ossify's`, `initramfs.img ${same('initramfs.img') ? 'identical to' : 'differs from'} ossify's`];
  const v = prep.record.verity;
  if (v) {
    if (!rootHash) throw new Error('veritysetup format printed no root hash');
    const rootA = prep.record.partitions.find((x) => x.label === 'ROOT-A')!;
    const slot = join(theirs, '..', 'root-a.img');
    run('dd', [`if=${theirs}`, `of=${slot}`, 'bs=4M', `skip=${rootA.offset}`, `count=${rootA.size}`, 'iflag=skip_bytes,count_bytes', 'conv=sparse', 'status=none']);
    run('veritysetup', ['verify', slot, slot, rootHash, `--hash-offset=${v.hashOffset}`]);
    rmSync(slot, { force: true });
    notes.push(`ROOT-A verifies (root hash ${rootHash === v.roothash ? 'equal to' : 'other than'} ossify's)`);
  }
  log(`host-tool disk: GPT and ESP file list as ossify's; ${notes.join('; ')}`);
}

// helpers -----------------------------------------------------------------------------------

let ticks: number | undefined;

/** Seconds of user + system CPU of this process's waited-for children (and theirs). */
function childCpu(): number {
  ticks ??= Number(run('getconf', ['CLK_TCK']).trim()) || 100;
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 16 and 17 of proc(5) (cutime, cstime); f[0] is field 3.
  return (Number(f[13]) + Number(f[14])) / ticks;
}

function allocated(file: string): number {
  return statSync(file).blocks * 512;
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : e.isFile() ? [join(dir, e.name)] : []));
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function need(cmd: string, pkg: string): void {
  if (spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' }).status !== 0) {
    throw new Error(`${cmd} is not installed: apt-get install ${pkg}`);
  }
}

function run(cmd: string, args: string[], cwd?: string, env?: NodeJS.ProcessEnv): string {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr || r.error}`);
  return r.stdout;
}
