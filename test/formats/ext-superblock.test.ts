import { openSync, readSync, closeSync, writeFileSync } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXT_SUPERBLOCK_OFFSET, EXT_SUPERBLOCK_SIZE, parseExtSuperblock } from '../../builder/formats/ext-superblock.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

/**
 * The ext superblock fields `ossify status` reports for /var on STATE, read from file systems
 * e2fsprogs' mke2fs made, and checked against what its dumpe2fs says of them.
 */

const work = tempDir('ext-superblock');
afterAll(() => work.cleanup());

function superblockOf(path: string, at = 0): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = Buffer.alloc(EXT_SUPERBLOCK_SIZE);
    readSync(fd, b, 0, b.length, at + EXT_SUPERBLOCK_OFFSET);
    return b;
  } finally {
    closeSync(fd);
  }
}

function dumpe2fs(path: string): Record<string, string> {
  const r = run('dumpe2fs', ['-h', path]);
  expect(r.code, r.stderr).toBe(0);
  return Object.fromEntries(r.stdout.split('\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')).trim(), l.slice(l.indexOf(':') + 1).trim()]));
}

describe('the ext superblock reader', () => {
  it.each([
    ['ext4', ['-t', 'ext4', '-L', 'ossify-var'], 24],
    ['ext4', ['-t', 'ext4', '-O', '64bit', '-b', '4096'], 64],
    ['ext3', ['-t', 'ext3', '-L', 'x'], 20],
    ['ext2', ['-t', 'ext2', '-L', 'sixteen-chars-ok'], 8],
  ] as const)('reads %s made by mke2fs %j (%i MiB) as dumpe2fs does', async (kind, args, mib) => {
    needTool('mke2fs', 'e2fsprogs');
    const img = join(work.path, `${kind}-${mib}.img`);
    writeFileSync(img, '');
    await truncate(img, mib << 20);
    const r = run('mke2fs', ['-q', '-F', ...args, img]);
    expect(r.code, r.stderr).toBe(0);
    const sb = parseExtSuperblock(superblockOf(img))!;
    const d = dumpe2fs(img);
    expect(sb.kind).toBe(kind);
    expect(sb.blockSize).toBe(Number(d['Block size']));
    expect(sb.size).toBe(Number(d['Block count']) * Number(d['Block size']));
    expect(sb.label).toBe(d['Filesystem volume name'] === '<none>' ? '' : d['Filesystem volume name']);
    expect(sb.uuid).toBe(d['Filesystem UUID']);
  });

  it('is not fooled by zeros or another file system', () => {
    expect(parseExtSuperblock(new Uint8Array(EXT_SUPERBLOCK_SIZE))).toBeUndefined();
    expect(parseExtSuperblock(new Uint8Array(10))).toBeUndefined();
    needTool('mkfs.fat', 'dosfstools');
    const img = join(work.path, 'fat.img');
    writeFileSync(img, Buffer.alloc(8 << 20));
    expect(run('mkfs.fat', [img]).code).toBe(0);
    expect(parseExtSuperblock(superblockOf(img))).toBeUndefined();
  });
});
