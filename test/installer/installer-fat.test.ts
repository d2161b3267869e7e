import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { readFat, writeFat32 } from '../../builder/formats/fat/index.ts';
import { openFatEditor, type FatDevice, type FatEditor } from '../../builder/formats/fat/mutate.ts';
import { bytesContent, textContent } from '../../builder/tree/content.ts';
import { FileTree, type Meta } from '../../builder/tree/tree.ts';
import { bufferSink } from '../../builder/util/sink.ts';
import { noise, sha } from '../helpers/installer-fixtures.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

const MiB = 1 << 20;
const T0 = 1_700_000_000;
const F: Meta = { mode: 0o644, uid: 0, gid: 0, mtime: T0 };
const D: Meta = { mode: 0o755, uid: 0, gid: 0, mtime: T0 };
/** The smallest FAT32 volume with 512-byte clusters is a little over 32 MiB. */
const VOLUME = 34 * MiB;
const work = tempDir('fat-mutate');
afterAll(() => work.cleanup());

/** An ESP like the build makes: systemd-boot, loader config, slot A, an empty slot B. */
async function espImage(): Promise<Uint8Array> {
  const t = new FileTree(D);
  for (const d of ['EFI', 'EFI/BOOT', 'loader', 'loader/entries', 'ossify', 'ossify/a', 'ossify/b']) t.ensureDir(d, D);
  t.set('EFI/BOOT/BOOTX64.EFI', { type: 'file', ...F, content: bytesContent(noise(90_000, 1)) });
  t.set('loader/loader.conf', { type: 'file', ...F, content: textContent('timeout 0\n') });
  t.set('loader/entries/ossify-a.conf', { type: 'file', ...F, content: textContent('title A\nversion 1-1.0.0\n') });
  t.set('ossify/a/vmlinuz', { type: 'file', ...F, content: bytesContent(noise(300_001, 2)) });
  t.set('ossify/a/initrd.img', { type: 'file', ...F, content: bytesContent(noise(40_000, 3)) });
  const img = new Uint8Array(VOLUME);
  await writeFat32(t, { size: VOLUME, label: 'OSSIFY-ESP', serial: 0x1234abcd }, bufferSink(img));
  return img;
}

interface Recorded {
  writes: { offset: number; data: Uint8Array }[];
  syncs: number;
}

/** A device over a buffer that records every write, so any prefix can be replayed as a crash. */
function bufferDevice(img: Uint8Array, rec?: Recorded): FatDevice {
  return {
    async read(offset, length) {
      return img.slice(offset, offset + length);
    },
    async write(offset, data) {
      img.set(data, offset);
      rec?.writes.push({ offset, data: Uint8Array.from(data) });
    },
    async sync() {
      if (rec) rec.syncs++;
    },
  };
}

let fsckRuns = 0;
function fsck(img: Uint8Array): { ok: boolean; out: string } {
  needTool('fsck.fat', 'dosfstools');
  const file = join(work.path, `fsck-${fsckRuns++}.img`);
  writeFileSync(file, img);
  const r = run('fsck.fat', ['-n', file]);
  return { ok: r.code === 0 && !/\n[^\n]*(lost|orphan|wrong|differ|invalid|Reclaim|bad|cluster chain)/i.test(r.stdout.split('\n').slice(1).join('\n')), out: r.stdout + r.stderr };
}

function expectClean(img: Uint8Array): void {
  const r = fsck(img);
  expect(r.ok, r.out).toBe(true);
}

async function editor(img: Uint8Array, rec?: Recorded): Promise<FatEditor> {
  return openFatEditor(bufferDevice(img, rec));
}

describe('FAT in-place editor', () => {
  it('creates, reads, renames, replaces and removes files, fsck.fat-clean after each step', async () => {
    needTool('mtype', 'mtools');
    const img = await espImage();
    expectClean(img);
    const e = await editor(img);
    const free0 = e.freeBytes();

    const kernel = noise(250_000, 7);
    await e.mkdirp('ossify/b', { mtime: T0 });
    await e.writeFile('ossify/b/vmlinuz.ossify-tmp', kernel, { mtime: T0 });
    expectClean(img);
    await e.rename('ossify/b/vmlinuz.ossify-tmp', 'vmlinuz');
    expectClean(img);
    expect(sha(await e.readFile('ossify/b/vmlinuz'))).toBe(sha(kernel));
    // A reader nobody here wrote agrees.
    const file = join(work.path, 'check.img');
    writeFileSync(file, img);
    expect(run('sh', ['-c', 'mtype -i "$1" ::ossify/b/vmlinuz | sha256sum', 'sh', file]).stdout.slice(0, 64)).toBe(sha(kernel));

    await e.writeFile('loader/entries/ossify-b+3.conf.ossify-tmp', Buffer.from('title B\nversion 2-2.0.0\n'), { mtime: T0 });
    await e.rename('loader/entries/ossify-b+3.conf.ossify-tmp', 'ossify-b+3.conf');
    expectClean(img);
    expect((await e.list('loader/entries')).map((x) => x.name).sort()).toEqual(['ossify-a.conf', 'ossify-b+3.conf']);

    await e.replaceFile('loader/entries/ossify-a.conf', Buffer.from('title A\nversion 3-1.0.0\n'), { mtime: T0 });
    expectClean(img);
    expect(Buffer.from(await e.readFile('loader/entries/ossify-a.conf')).toString()).toBe('title A\nversion 3-1.0.0\n');

    // A rename to a longer name cannot happen in place; it still ends clean.
    await e.rename('loader/entries/ossify-b+3.conf', 'ossify-b-with-a-much-longer-name+3.conf');
    expectClean(img);
    expect(await e.stat('loader/entries/ossify-b+3.conf')).toBeUndefined();

    expect(await e.remove('ossify/b/vmlinuz')).toBe(true);
    expect(await e.remove('ossify/b/vmlinuz')).toBe(false);
    await e.remove('loader/entries/ossify-b-with-a-much-longer-name+3.conf');
    expectClean(img);
    expect(e.freeBytes()).toBe(free0);
    expect(await e.check()).toEqual([]);

    // The strict reader (which rejects any debris) reads it, and sees what the editor sees.
    const vol = await readFat(img);
    expect((await vol.list()).map((n) => n.path).sort()).toEqual(
      ['EFI', 'EFI/BOOT', 'EFI/BOOT/BOOTX64.EFI', 'loader', 'loader/entries', 'loader/entries/ossify-a.conf', 'loader/loader.conf', 'ossify', 'ossify/a', 'ossify/a/initrd.img', 'ossify/a/vmlinuz', 'ossify/b'].sort(),
    );
    expect(vol.info.fatsMatch).toBe(true);
    expect(vol.info.fsInfo?.free).toBe(vol.freeClusters());
  });

  it('grows a directory past one cluster and makes new directories', async () => {
    const img = await espImage();
    const e = await editor(img);
    await e.mkdirp('extra/deeper/still', { mtime: T0 });
    for (let i = 0; i < 40; i++) await e.writeFile(`extra/deeper/a long file name number ${i}.txt`, Buffer.from(`file ${i}\n`), { mtime: T0 });
    expectClean(img);
    const names = (await e.list('extra/deeper')).map((x) => x.name);
    expect(names).toHaveLength(41);
    const vol = await readFat(img);
    expect(Buffer.from(await vol.readFile('extra/deeper/a long file name number 39.txt')).toString()).toBe('file 39\n');
    // Short names stay unique when they collide on the ~N basis.
    const shorts = (await vol.readDir('extra/deeper')).map((n) => n.shortName);
    expect(new Set(shorts).size).toBe(shorts.length);
  });

  it('refuses what does not fit and what already exists', async () => {
    const img = await espImage();
    const e = await editor(img);
    await expect(e.writeFile('ossify/a/vmlinuz', Buffer.from('x'), { mtime: T0 })).rejects.toThrow(/already exists/);
    await expect(e.writeFile('ossify/a/VMLINUZ', Buffer.from('x'), { mtime: T0 })).rejects.toThrow(/already exists/);
    await expect(e.writeFile('big', new Uint8Array(e.freeBytes() + 512), { mtime: T0 })).rejects.toThrow(/no room/);
    await expect(e.writeFile('bad:name', Buffer.from('x'), { mtime: T0 })).rejects.toThrow(/forbids/);
    expectClean(img);
  });

  /** Replays every prefix of an operation's writes onto the volume as it was before. */
  async function eachCrash(setup: (e: FatEditor) => Promise<void>, op: (e: FatEditor) => Promise<void>, judge: (e: FatEditor, k: number, total: number) => Promise<void>): Promise<number> {
    const base = await espImage();
    await setup(await editor(base));
    const rec: Recorded = { writes: [], syncs: 0 };
    const after = Uint8Array.from(base);
    await op(await editor(after, rec));
    for (let k = 0; k <= rec.writes.length; k++) {
      const img = Uint8Array.from(base);
      for (const w of rec.writes.slice(0, k)) img.set(w.data, w.offset);
      const e = await editor(img);
      await judge(e, k, rec.writes.length);
      // Whatever a crash left, repair returns the volume to one fsck.fat finds clean.
      await e.repair();
      expect(await e.check()).toEqual([]);
      if (k === 0 || k === rec.writes.length || k % 3 === 0) expectClean(img);
    }
    return rec.writes.length;
  }

  it('a rename is one write: at every crash point the file has the old name or the new one', async () => {
    const content = Buffer.from('title B\nversion 2-2.0.0\n');
    const writes = await eachCrash(
      (e) => e.writeFile('loader/entries/ossify-b+3.conf.ossify-tmp', content, { mtime: T0 }),
      (e) => e.rename('loader/entries/ossify-b+3.conf.ossify-tmp', 'ossify-b+3.conf'),
      async (e, k, total) => {
        const names = (await e.list('loader/entries')).map((x) => x.name);
        const has = names.filter((n) => n.startsWith('ossify-b'));
        expect(has).toEqual([k === total ? 'ossify-b+3.conf' : 'ossify-b+3.conf.ossify-tmp']);
        expect(Buffer.from(await e.readFile(`loader/entries/${has[0]}`)).equals(content)).toBe(true);
      },
    );
    expect(writes).toBe(1);
  });

  it('a new file appears only complete, whatever write a crash stops at', async () => {
    const data = noise(200_000, 9);
    const writes = await eachCrash(
      async () => {},
      async (e) => {
        await e.writeFile('ossify/b/vmlinuz.ossify-tmp', data, { mtime: T0 });
        await e.rename('ossify/b/vmlinuz.ossify-tmp', 'vmlinuz');
      },
      async (e) => {
        const st = await e.stat('ossify/b/vmlinuz');
        if (st) expect(sha(await e.readFile('ossify/b/vmlinuz'))).toBe(sha(data));
        const tmp = await e.stat('ossify/b/vmlinuz.ossify-tmp');
        if (tmp) expect(sha(await e.readFile('ossify/b/vmlinuz.ossify-tmp'))).toBe(sha(data));
        expect(st && tmp).toBeFalsy();
      },
    );
    expect(writes).toBeGreaterThan(3);
  });

  it('replacing a file\'s content leaves the old or the new content at every crash point', async () => {
    const old = 'title A\nversion 1-1.0.0\n';
    const next = 'title A\nversion 12-1.0.0\nwith more text than before\n';
    await eachCrash(
      async () => {},
      (e) => e.replaceFile('loader/entries/ossify-a.conf', Buffer.from(next), { mtime: T0 }),
      async (e) => {
        expect([old, next]).toContain(Buffer.from(await e.readFile('loader/entries/ossify-a.conf')).toString());
      },
    );
  });

  it('a delete removes the name in one write and frees the clusters after', async () => {
    await eachCrash(
      async () => {},
      async (e) => {
        await e.remove('ossify/a/vmlinuz');
      },
      async (e) => {
        const st = await e.stat('ossify/a/vmlinuz');
        if (st) expect(st.size).toBe(300_001);
      },
    );
  });

  it('removing one of two names of a chain (an interrupted rename) keeps the clusters the other uses', async () => {
    const img = await espImage();
    const e = await editor(img);
    const data = noise(3000, 5);
    await e.writeFile('loader/entries/x.ossify-tmp', data, { mtime: T0 });
    // A rename that cannot happen in place writes the new name first: stop right after it.
    const rec: Recorded = { writes: [], syncs: 0 };
    await (await editor(Uint8Array.from(img), rec)).rename('loader/entries/x.ossify-tmp', 'a-name-long-enough-to-need-more-entries.conf');
    img.set(rec.writes[0]!.data, rec.writes[0]!.offset);
    const torn = await editor(img);
    expect((await torn.check()).map((p) => p.kind)).toEqual(['cross-link']);
    await torn.remove('loader/entries/x.ossify-tmp');
    expect(sha(await torn.readFile('loader/entries/a-name-long-enough-to-need-more-entries.conf'))).toBe(sha(data));
    expect(await torn.check()).toEqual([]);
    expectClean(img);
  });

  it('keeps a model of random changes, and fsck.fat agrees', async () => {
    const names = fc.constantFrom('a', 'B.TXT', 'vmlinuz', 'initrd.img', 'release.json', 'ossify-b+3.conf', 'a long name with spaces.data', 'Ünïcode-näme.txt', 'x'.repeat(40));
    const op = fc.oneof(
      fc.record({ kind: fc.constant('write' as const), dir: fc.constantFrom('', 'loader/entries', 'ossify/b', 'new/dir'), name: names, size: fc.integer({ min: 0, max: 5000 }), seed: fc.integer() }),
      fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant('rename' as const), pick: fc.nat(), name: names }),
      fc.record({ kind: fc.constant('replace' as const), pick: fc.nat(), size: fc.integer({ min: 0, max: 3000 }), seed: fc.integer() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const img = await espImage();
        const e = await editor(img);
        const model = new Map<string, string>();
        const key = (p: string) => p.toUpperCase();
        const pick = (n: number) => [...model.keys()][n % Math.max(1, model.size)];
        for (const o of ops) {
          if (o.kind === 'write') {
            const path = o.dir ? `${o.dir}/${o.name}` : o.name;
            if ([...model.keys()].some((k) => key(k) === key(path)) || (await e.stat(path))) continue;
            if (o.dir) await e.mkdirp(o.dir, { mtime: T0 });
            const data = noise(o.size, o.seed);
            await e.writeFile(path, data, { mtime: T0 });
            model.set(path, sha(data));
          } else if (o.kind === 'remove') {
            const p = pick(o.pick);
            if (!p) continue;
            expect(await e.remove(p)).toBe(true);
            model.delete(p);
          } else if (o.kind === 'rename') {
            const p = pick(o.pick);
            if (!p) continue;
            const to = `${p.slice(0, p.lastIndexOf('/') + 1)}${o.name}`;
            if (to !== p && ([...model.keys()].some((k) => key(k) === key(to)) || (await e.stat(to)))) continue;
            await e.rename(p, o.name);
            const v = model.get(p)!;
            model.delete(p);
            model.set(to, v);
          } else {
            const p = pick(o.pick);
            if (!p) continue;
            const data = noise(o.size, o.seed);
            await e.replaceFile(p, data, { mtime: T0 });
            model.set(p, sha(data));
          }
        }
        for (const [p, h] of model) expect(sha(await e.readFile(p))).toBe(h);
        expect(await e.check()).toEqual([]);
        const vol = await readFat(img);
        for (const [p, h] of model) expect(sha(await vol.readFile(p))).toBe(h);
        expectClean(img);
      }),
      { numRuns: 25 },
    );
  });
});
