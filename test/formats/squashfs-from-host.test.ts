import { spawnSync } from 'node:child_process';
import { link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeSquashfs } from '../../builder/formats/squashfs/index.ts';
import { SquashfsReader } from '../../builder/formats/squashfs/reader.ts';
import { readContent } from '../../builder/tree/content.ts';
import { loadTreeFromHost, splitDev } from '../../builder/tree/from-host.ts';
import { requireTool, runOk } from '../helpers/oracle.ts';
import { requireSquashfsOracles } from '../helpers/squashfs.ts';

describe('loadTreeFromHost: a host directory as a tree (no root needed)', () => {
  let work: string;
  let server: Server;
  beforeAll(async () => {
    requireSquashfsOracles();
    requireTool('mkfifo', 'coreutils');
    work = await mkdtemp(join(tmpdir(), 'ossify-from-host-'));
    const d = join(work, 'root');
    await mkdir(join(d, 'etc', 'deep', 'er'), { recursive: true });
    await writeFile(join(d, 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
    await writeFile(join(d, 'big'), Buffer.alloc(300_000, 7));
    await link(join(d, 'big'), join(d, 'etc', 'big-link'));
    await symlink('../big', join(d, 'etc', 'sym'));
    expect(spawnSync('mkfifo', [join(d, 'fifo')]).status).toBe(0);
    server = createServer();
    await new Promise<void>((r) => server.listen(join(d, 'sock'), r));
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await rm(work, { recursive: true, force: true });
  });

  it('reads every kind with lstat, hard links as links to the first name', async () => {
    const tree = await loadTreeFromHost(join(work, 'root'));
    expect(tree.get('big')?.type).toBe('file');
    expect(tree.get('etc/big-link')).toEqual({ type: 'hardlink', target: 'big' });
    expect(tree.get('etc/sym')).toMatchObject({ type: 'symlink', target: '../big' });
    expect(tree.get('fifo')?.type).toBe('fifo');
    expect(tree.get('sock')?.type).toBe('socket');
    expect(tree.get('etc/deep/er')?.type).toBe('dir');
    const passwd = tree.get('etc/passwd');
    expect(passwd?.type === 'file' && new TextDecoder().decode(await readContent(passwd.content))).toBe('root:x:0:0::/root:/bin/sh\n');

    const img = join(work, 'host.sqfs');
    await writeSquashfs(tree, img, { compression: 'zstd', threads: 2 });
    const r = await SquashfsReader.open(img);
    try {
      const inos = new Map<string, number>();
      for await (const { path, inode } of r.walk()) {
        inos.set(path, inode.ino);
        if (path === 'big') expect(inode.nlink).toBe(2);
      }
      expect(inos.get('big')).toBe(inos.get('etc/big-link'));
    } finally {
      await r.close();
    }
    const lls = runOk('unsquashfs', ['-lln', img]);
    expect(lls).toMatch(/^p.* squashfs-root\/fifo$/m);
    expect(lls).toMatch(/^s.* squashfs-root\/sock$/m);
    expect(lls).toMatch(/^l.* squashfs-root\/etc\/sym -> \.\.\/big$/m);
  });

  it('splits Linux device numbers like glibc', () => {
    expect(splitDev(0x801)).toEqual({ major: 8, minor: 1 });
    expect(splitDev(0x0501)).toEqual({ major: 5, minor: 1 });
    // makedev(259, 300000) with glibc's layout: minor's high bits above bit 20.
    expect(splitDev(0x493103e0)).toEqual({ major: 259, minor: 300000 });
    expect(splitDev(2 ** 44)).toEqual({ major: 0x1000, minor: 0 }); // major bits above 12 live in the high word
    expect(splitDev(2 ** 32)).toEqual({ major: 0, minor: 1 << 20 });
  });
});
