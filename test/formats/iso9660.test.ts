import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BLOCK, planIso, readIso, writeIso, type IsoSpec } from '../../builder/formats/iso9660.ts';
import { writeFat32 } from '../../builder/formats/fat/index.ts';
import { bytesContent, readContent, textContent } from '../../builder/tree/content.ts';
import { FileTree } from '../../builder/tree/tree.ts';
import { derivedGuid } from '../../builder/util/guid.ts';
import { bufferSink, fileHandleSink } from '../../builder/util/sink.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';
import { noise, sha } from '../helpers/installer-fixtures.ts';
import { ossify } from '../helpers/cli.ts';

const MiB = 1 << 20;
const EPOCH = 1_700_000_001;

/** A small FAT32 boot image with one file, as the ISO's El Torito EFI image. */
async function fatImage(): Promise<Uint8Array> {
  const meta = { mode: 0o644, uid: 0, gid: 0, mtime: EPOCH };
  const t = new FileTree({ ...meta, mode: 0o755 });
  t.ensureDir('EFI/BOOT', { ...meta, mode: 0o755 });
  t.set('EFI/BOOT/BOOTX64.EFI', { type: 'file', ...meta, content: textContent('not really a boot loader\n') });
  const buf = new Uint8Array(34 * MiB);
  await writeFat32(t, { size: buf.length, label: 'ISOTEST', serial: 0x1234abcd }, bufferSink(buf));
  return buf;
}

async function spec(): Promise<IsoSpec> {
  return {
    volumeId: 'OSSIFY_TEST',
    epoch: EPOCH,
    efiBootImage: 'BOOT/EFI.IMG',
    diskGuid: derivedGuid('iso-test', 'disk'),
    espGuid: derivedGuid('iso-test', 'esp'),
    application: 'OSSIFY',
    files: [
      { path: 'BOOT/EFI.IMG', content: bytesContent(await fatImage()) },
      { path: 'README.TXT', content: textContent('hello\n') },
      { path: 'A/B/C/DEEP.BIN', content: bytesContent(noise(5000, 7)) },
      { path: 'EMPTY.DAT', content: bytesContent(new Uint8Array(0)) },
      { path: 'A/Z_LAST.TXT', content: textContent('z\n') },
      { path: 'A/AA.TXT', content: textContent('a\n') },
    ],
  };
}

async function writeTo(path: string, s: IsoSpec) {
  const fh = await open(path, 'w');
  try {
    return await writeIso(s, fileHandleSink(fh));
  } finally {
    await fh.close();
  }
}

describe('ISO 9660 writer', () => {
  it('writes an image isoinfo, xorriso, sgdisk and fdisk read as written', async () => {
    needTool('isoinfo', 'genisoimage');
    needTool('xorriso', 'xorriso');
    needTool('sgdisk', 'gdisk');
    needTool('fdisk', 'fdisk');
    needTool('fsck.fat', 'dosfstools');
    const tmp = tempDir('ossify-iso-');
    const dir = tmp.path;
    const iso = join(dir, 'x.iso');
    const s = await spec();
    const layout = await writeTo(iso, s);
    const bytes = readFileSync(iso);
    expect(bytes.length).toBe(layout.size);
    expect(layout.size % BLOCK).toBe(0);

    const d = run('isoinfo', ['-d', '-i', iso]);
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(/Volume id: OSSIFY_TEST/);
    expect(d.stdout).toMatch(new RegExp(`Volume size is: ${layout.size / BLOCK}\\b`));
    expect(d.stdout).toMatch(/El Torito VD version 1 found, boot catalog is in sector/);

    const l = run('isoinfo', ['-R', '-l', '-i', iso]);
    expect(l.code).toBe(0);
    for (const p of ['/BOOT', '/A', '/A/B', '/A/B/C']) expect(l.stdout).toContain(`Directory listing of ${p}/`);
    // Directory records sorted by name (AA before Z_LAST), every file present with its size.
    const aDir = l.stdout.slice(l.stdout.indexOf('Directory listing of /A/\n'));
    expect(aDir.indexOf('AA.TXT;1')).toBeLessThan(aDir.indexOf('Z_LAST.TXT;1'));
    for (const f of s.files) {
      const got = spawnSync('isoinfo', ['-i', iso, '-x', `/${f.path};1`], { maxBuffer: 1 << 30 });
      expect(got.status).toBe(0);
      expect(sha(got.stdout)).toBe(sha(await readContent(f.content)));
    }

    const x = run('xorriso', ['-indev', iso, '-pvd_info', '-report_el_torito', 'plain', '-report_system_area', 'plain']);
    expect(x.stdout).toMatch(/Creation Time: 2023111422132100/);
    expect(x.code, x.stderr).toBe(0);
    const boot = layout.extents.get('BOOT/EFI.IMG')!;
    // El Torito: one UEFI no-emulation image at the FAT image's block.
    expect(x.stdout).toMatch(new RegExp(`El Torito boot img :\\s+1\\s+UEFI\\s+y\\s+none\\s+0x0000\\s+0x00\\s+\\d+\\s+${boot.block}`));
    expect(x.stdout).toMatch(/El Torito img path :\s+1\s+\/BOOT\/EFI.IMG/);
    expect(x.stdout).toMatch(/System area summary: MBR protective-msdos-label .*GPT/);
    // xorriso recognises the GPT partition as the boot image file itself.
    expect(x.stdout).toMatch(/GPT partition path :\s+1\s+\/BOOT\/EFI.IMG/);
    expect(x.stdout).toMatch(/GPT type GUID\s+:\s+1\s+28732ac11ff8d211ba4b00a0c93ec93b/);
    const imgSize = Math.ceil(boot.size / 512);
    expect(x.stdout).toMatch(new RegExp(`GPT start and size :\\s+1\\s+${boot.block * 4}\\s+${imgSize}`));

    const sg = run('sgdisk', ['-v', iso]);
    expect(sg.stdout).toMatch(/No problems found/);
    const fd = run('fdisk', ['-l', iso], { env: { LC_ALL: 'C' } });
    expect(fd.code).toBe(0);
    expect(fd.stdout).toMatch(new RegExp(`${iso}1\\s+${boot.block * 4}\\s+${boot.block * 4 + imgSize - 1}\\s+${imgSize}\\s+\\S+\\s+EFI System`));
    // The GPT partition is the boot image: fsck.fat checks the FAT at its offset.
    const part = join(dir, 'part.img');
    const { writeFileSync } = await import('node:fs');
    writeFileSync(part, bytes.subarray(boot.block * BLOCK, boot.block * BLOCK + boot.size));
    expect(run('fsck.fat', ['-n', part]).code).toBe(0);
    tmp.cleanup();
  });

  it('reads back what it wrote and writes the same bytes twice', async () => {
    const s = await spec();
    const plan = planIso(s).layout;
    const a = Buffer.alloc(plan.size);
    const b = Buffer.alloc(plan.size);
    await writeIso(s, bufferSink(a));
    await writeIso(await spec(), bufferSink(b));
    expect(a.equals(b)).toBe(true);
    const vol = await readIso(async (o, n) => a.subarray(o, o + n));
    expect(vol.volumeId).toBe('OSSIFY_TEST');
    expect(vol.blocks).toBe(plan.size / BLOCK);
    const files = vol.entries.filter((e) => !e.isDir).map((e) => e.path).sort();
    expect(files).toEqual(s.files.map((f) => f.path).sort());
    const deep = vol.entries.find((e) => e.path === 'A/B/C/DEEP.BIN')!;
    expect(Buffer.from(a.subarray(deep.block * BLOCK, deep.block * BLOCK + deep.size)).equals(Buffer.from(noise(5000, 7)))).toBe(true);
    expect(vol.boot).toEqual([{ platform: 0xef, media: 0, block: plan.extents.get('BOOT/EFI.IMG')!.block, sectors: 0 }]);
  });

  it('refuses names that are not ISO 9660 identifiers, naming the path', async () => {
    const s = await spec();
    await expect(writeIso({ ...s, files: [...s.files, { path: 'lower.txt', content: textContent('') }] }, bufferSink(new Uint8Array(0)))).rejects.toThrow(/"lower.txt".*not an ISO 9660 file name/);
    await expect(writeIso({ ...s, files: [...s.files, { path: 'README.TXT', content: textContent('') }] }, bufferSink(new Uint8Array(0)))).rejects.toThrow(/listed twice/);
    await expect(writeIso({ ...s, efiBootImage: 'NOPE.IMG' }, bufferSink(new Uint8Array(0)))).rejects.toThrow(/EFI boot image NOPE.IMG is not among the files/);
  });

  it('ossify iso refuses a directory that is no build output, exit 2, nothing written', async () => {
    const tmp = tempDir('ossify-iso-cli-');
    try {
      const r = await ossify(['iso', tmp.path]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/is not an ossify build output: cannot read build\.json/);
      expect(readdirSync(tmp.path)).toEqual([]);
    } finally {
      tmp.cleanup();
    }
  });
});
