import { createWriteStream } from 'node:fs';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { loadBuildJson } from '../release/build-json.ts';
import { bootLoaderArtifact, DISK, INITRAMFS, KERNEL, ROOTFS } from '../release/artifacts.ts';
import { cpioChunks, writeCpio } from '../formats/cpio.ts';
import { writeFat32 } from '../formats/fat/index.ts';
import { writeIso, type IsoLayout } from '../formats/iso9660.ts';
import { FileTree, type Meta } from '../tree/tree.ts';
import { bytesContent, hostFileContent, textContent, type Content } from '../tree/content.ts';
import { produceAtomic, tempPathFor } from '../util/atomic.ts';
import { derivedGuid } from '../util/guid.ts';
import { fileHandleSink } from '../util/sink.ts';
import { InputError } from '../util/errors.ts';
import { diskPayload } from './payload.ts';
import { INSTALLER_INIT } from './installer-init.ts';
import { liveTree } from './live-root.ts';
import { SquashfsReader } from '../formats/squashfs/reader.ts';

export const ISO_ARTIFACT = 'disk.iso';
/** The boot image's path in the ISO 9660 tree (and the El Torito / GPT target). */
const EFI_IMAGE = 'BOOT/EFI.IMG';
const MiB = 1 << 20;
/** FAT32 with 512-byte clusters needs 65525 of them. */
const MIN_FAT = 34 * MiB;
// The installer ISO is x86_64 for now (BIOS-free UEFI CD boot through OVMF; its console is ttyS0).
const ISO_ARCH = 'x86_64';
const BOOT_LOADER_ARTIFACT = bootLoaderArtifact(ISO_ARCH);
const REQUIRED = [DISK, ROOTFS, KERNEL, INITRAMFS, BOOT_LOADER_ARTIFACT];

export interface IsoResult {
  path: string;
  size: number;
  /** The bytes a target disk needs. */
  diskSize: number;
  layout: IsoLayout;
}

/**
 * systemd-boot hands the kernel its initrds back to back, and the kernel looks for the next
 * archive's cpio magic only at a 4-byte offset (zeros between archives are skipped): each
 * initrd is padded with zeros to whole 512-byte sectors.
 */
function padded(c: Content): Content {
  const pad = (512 - (c.size % 512)) % 512;
  if (pad === 0) return c;
  return {
    size: c.size + pad,
    origin: c.origin,
    async *stream() {
      yield* c.stream();
      yield new Uint8Array(pad);
    },
  };
}

/** Both entries load the same kernel and initrds; the installer /init reads `ossify.live=1`. */
const entry = (title: string, options: string) =>
  [
    `title ${title}`,
    'linux /ossify/vmlinuz',
    'initrd /ossify/initrd.img',
    'initrd /ossify/install.img',
    'initrd /ossify/payload.img',
    'initrd /ossify/live.img',
    `options console=tty0 console=ttyS0 loglevel=4${options}`,
    '',
  ].join('\n');

async function writeCpioFile(tree: FileTree, path: string): Promise<void> {
  const out = createWriteStream(path);
  for await (const c of cpioChunks(tree)) if (!out.write(c)) await once(out, 'drain');
  out.end();
  await once(out, 'finish');
}

const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Writes `<outDir>/disk.iso` (or `isoPath`) from a build output: a UEFI-bootable hybrid ISO
 * whose El Torito image (also its GPT's EFI System Partition) holds systemd-boot, the
 * release's kernel and initramfs, the installer /init, the payload and the live root, and
 * installs the build's disk onto a machine's disk or, with no target, boots the release live
 * (builder/iso/installer-init.ts). Everything derives
 * from build.json and the artifacts, so two runs write the same bytes.
 */
export async function writeInstallerIso(outDir: string, isoPath = join(outDir, ISO_ARTIFACT)): Promise<IsoResult> {
  const build = await loadBuildJson(outDir);
  for (const a of REQUIRED) {
    if (!build.artifacts[a]) throw new InputError(`${outDir}/build.json lists no ${a}; the installer ISO needs ${REQUIRED.join(', ')}`, { hint: 'rebuild with this version of ossify' });
    const st = await stat(join(outDir, a)).catch(() => undefined);
    if (!st || st.size !== build.artifacts[a]!.size) throw new InputError(`${outDir}/${a} is missing or not the size build.json records`);
  }
  if (build.epoch === undefined) throw new InputError(`${outDir}/build.json has no epoch; the ISO's dates come from it`);
  return writeIsoFile(isoPath, { dir: outDir, build: { name: build.name, version: build.version, epoch: build.epoch, profileDigest: build.profileDigest, arch: build.arch } });
}

/** What the ISO is made from: a directory with the build's artifacts, and who the build is. */
export interface IsoSource {
  dir: string;
  build: { name: string; version: string; epoch: number; profileDigest: string; arch?: string };
}

/** The output-format registry's writer shape (`write(dest, ctx)`): the ISO of the build in `ctx.dir`. */
export async function write(dest: string, ctx: IsoSource): Promise<void> {
  await writeIsoFile(dest, ctx);
}

export async function writeIsoFile(isoPath: string, src: IsoSource): Promise<IsoResult> {
  const { dir: outDir, build } = src;
  if (build.arch !== undefined && build.arch !== ISO_ARCH) {
    throw new InputError(`the installer ISO is made for ${ISO_ARCH} only; this build is ${build.arch}`, { hint: 'write raw or qcow2 for this architecture instead' });
  }
  for (const a of REQUIRED) {
    if (!(await stat(join(outDir, a)).catch(() => undefined))) throw new InputError(`${outDir} has no ${a}; the installer ISO needs ${REQUIRED.join(', ')}`);
  }
  const epoch = build.epoch;
  const work = tempPathFor(`${isoPath}.work`);
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { recursive: true });
  try {
    const payload = await diskPayload(join(outDir, DISK), join(work, 'disk.data'));
    const meta: Meta = { mode: 0o644, uid: 0, gid: 0, mtime: epoch };
    const dirMeta: Meta = { ...meta, mode: 0o755 };
    const tree = (files: Record<string, Content>, mode = 0o644) => {
      const t = new FileTree(dirMeta);
      for (const [path, content] of Object.entries(files)) {
        t.ensureDir(dirname(path) === '.' ? '' : dirname(path), dirMeta);
        t.set(path, { type: 'file', ...meta, mode, content });
      }
      return t;
    };
    const env = [
      `NAME=${shq(build.name)}`,
      `VERSION=${shq(build.version)}`,
      `DISK_SIZE=${payload.diskSize}`,
      `DATA_SHA256=${payload.dataSha256}`,
      `LABELS=${shq(payload.labels.join(' '))}`,
      '',
    ].join('\n');
    const installCpio = await writeCpio(tree({ init: textContent(INSTALLER_INIT, 'installer /init') }, 0o755));
    const payloadTree = tree({
      'ossify/install/disk.map': textContent(payload.map),
      'ossify/install/disk.data': hostFileContent(join(work, 'disk.data'), payload.dataSize),
      'ossify/install/mbr.bin': bytesContent(payload.mbr),
      'ossify/install/gpt.hdr': bytesContent(payload.header),
      'ossify/install/gpt.ent': bytesContent(payload.entries),
      'ossify/install/release.env': textContent(env),
    });
    // Already-compressed data: the payload archive stays uncompressed (the kernel reads both kinds).
    const payloadPath = join(work, 'payload.img');
    await writeCpioFile(payloadTree, payloadPath);
    // The live root: the release's root file system under /live of the initramfs.
    const livePath = join(work, 'live.img');
    const reader = await SquashfsReader.open(join(outDir, ROOTFS));
    try {
      await writeCpioFile(await liveTree(reader, dirMeta), livePath);
    } finally {
      await reader.close();
    }

    const file = async (name: string) => hostFileContent(join(outDir, name), (await stat(join(outDir, name))).size);
    const systemdBoot = await file(BOOT_LOADER_ARTIFACT);
    const espFiles: Record<string, Content> = {
      'EFI/BOOT/BOOTX64.EFI': systemdBoot,
      'loader/loader.conf': textContent('timeout 3\ndefault ossify-install.conf\n'),
      'loader/entries/ossify-install.conf': textContent(entry(`Install ${build.name} ${build.version}`, '')),
      'loader/entries/ossify-live.conf': textContent(entry(`${build.name} ${build.version} (live, no install)`, ' ossify.live=1')),
      'ossify/vmlinuz': await file(KERNEL),
      'ossify/initrd.img': padded(await file(INITRAMFS)),
      'ossify/install.img': padded(bytesContent(installCpio)),
      'ossify/payload.img': padded(hostFileContent(payloadPath, (await stat(payloadPath)).size)),
      'ossify/live.img': padded(hostFileContent(livePath, (await stat(livePath)).size)),
    };
    const total = Object.values(espFiles).reduce((n, c) => n + c.size, 0);
    // 512-byte clusters cost 1.6 % in FAT copies; round up to whole MiB.
    const fatSize = Math.max(MIN_FAT, Math.ceil((total * 1.03 + 2 * MiB) / MiB) * MiB);
    const efiPath = join(work, 'efi.img');
    const fh = await open(efiPath, 'w');
    try {
      await fh.truncate(fatSize);
      await writeFat32(tree(espFiles), { size: fatSize, label: 'OSSIFY-ISO', serial: parseInt(build.profileDigest.replace(/^sha256:/, '').slice(8, 16), 16) >>> 0 }, fileHandleSink(fh));
    } finally {
      await fh.close();
    }

    const volumeId = `${build.name}_${build.version}`.toUpperCase().replace(/[^A-Z0-9_]/g, '_').slice(0, 32);
    const layout = await produceAtomic(isoPath, async (tmp) => {
      const iso = await open(tmp, 'w');
      try {
        return await writeIso(
          {
            volumeId,
            epoch,
            application: 'OSSIFY',
            efiBootImage: EFI_IMAGE,
            diskGuid: derivedGuid(build.profileDigest, 'iso', 'disk'),
            espGuid: derivedGuid(build.profileDigest, 'iso', 'esp'),
            files: [
              { path: EFI_IMAGE, content: hostFileContent(efiPath, fatSize) },
              { path: 'RELEASE.ENV', content: textContent(env) },
            ],
          },
          fileHandleSink(iso),
        );
      } finally {
        await iso.close();
      }
    });
    return { path: isoPath, size: layout.size, diskSize: payload.diskSize, layout };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
