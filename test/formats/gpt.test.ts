import { readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  gptRegions,
  planPartitions,
  readGpt,
  usableRange,
  writeGpt,
  type ByteReader,
  type GptLayout,
  type PartitionSpec,
} from '../../builder/formats/gpt.ts';
import { derivedGuid } from '../../builder/util/guid.ts';
import { bufferSink, fileHandleSink } from '../../builder/util/sink.ts';
import { needTool, run, tempDir } from '../helpers/oracle-formats.ts';

const ESP = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
const ROOT_X64 = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';
const LINUX = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
const MiB = 1 << 20;
const GiB = 1 << 30;

function defaultSpecs(seed = 'profile'): PartitionSpec[] {
  return [
    { name: 'ESP', typeGuid: ESP, guid: derivedGuid(seed, 'ESP'), size: 256 * MiB },
    { name: 'ROOT-A', typeGuid: ROOT_X64, guid: derivedGuid(seed, 'ROOT-A'), size: 1 * GiB },
    { name: 'ROOT-B', typeGuid: ROOT_X64, guid: derivedGuid(seed, 'ROOT-B'), size: 1 * GiB, attributes: (1n << 63n) | 4n },
    { name: 'STATE', typeGuid: LINUX, guid: derivedGuid(seed, 'STATE'), size: 'rest' },
  ];
}

function defaultLayout(diskSize = 4 * GiB): GptLayout {
  return { diskSize, diskGuid: derivedGuid('profile'), partitions: planPartitions(diskSize, defaultSpecs()) };
}

/** A sparse disk file holding `layout`; the test owns cleanup. */
async function diskFile(layout: GptLayout, dir: string, name = 'disk.img'): Promise<string> {
  const f = join(dir, name);
  const fh = await open(f, 'w+');
  try {
    await fh.truncate(layout.diskSize);
    await writeGpt(layout, fileHandleSink(fh));
  } finally {
    await fh.close();
  }
  return f;
}

async function fileReader(path: string): Promise<{ read: ByteReader; close: () => Promise<void> }> {
  const fh = await open(path, 'r');
  return {
    read: async (offset, length) => {
      const b = Buffer.alloc(length);
      const { bytesRead } = await fh.read(b, 0, length, offset);
      if (bytesRead !== length) throw new Error(`short read at ${offset}`);
      return b;
    },
    close: () => fh.close(),
  };
}

interface SfdiskJson {
  partitiontable: {
    label: string;
    id: string;
    firstlba: number;
    lastlba: number;
    sectorsize: number;
    partitions: { start: number; size: number; type: string; uuid: string; name?: string; attrs?: string }[];
  };
}

function expectOraclesAgree(file: string, layout: GptLayout, opts: { unalignedEnds?: boolean } = {}): void {
  const v = run('sgdisk', ['-v', file]);
  expect(v.code, v.stdout + v.stderr).toBe(0);
  expect(v.stdout).toContain('No problems found');
  expect(v.stdout).not.toMatch(/^(Warning|Problem)/im);
  if (!opts.unalignedEnds) expect(v.stdout).not.toMatch(/Caution/);

  const j = run('sfdisk', ['--json', file]);
  expect(j.code, j.stderr).toBe(0);
  const t = (JSON.parse(j.stdout) as SfdiskJson).partitiontable;
  const { firstLba, lastLba } = usableRange(layout.diskSize);
  expect([t.label, t.id, t.firstlba, t.lastlba, t.sectorsize]).toEqual(['gpt', layout.diskGuid, firstLba, lastLba, 512]);
  expect(t.partitions.map((p) => ({ name: p.name ?? '', typeGuid: p.type, guid: p.uuid, firstLba: p.start, lastLba: p.start + p.size - 1 }))).toEqual(
    layout.partitions.map((p) => ({ name: p.name, typeGuid: p.typeGuid, guid: p.guid, firstLba: p.firstLba, lastLba: p.lastLba })),
  );

  const pr = run('sgdisk', ['-p', file]);
  expect(pr.code, pr.stderr).toBe(0);
  expect(pr.stdout).toContain(`Disk identifier (GUID): ${layout.diskGuid}`);
  const rows = pr.stdout.split('\n').filter((l) => /^\s+\d+\s+\d+\s+\d+/.test(l)).map((l) => l.trim().split(/\s+/));
  // sgdisk -p truncates long names; -i prints them whole.
  expect(rows.map((r) => [Number(r[1]), Number(r[2])])).toEqual(layout.partitions.map((p) => [p.firstLba, p.lastLba]));
  layout.partitions.forEach((p, i) => {
    const info = run('sgdisk', ['-i', String(i + 1), file]).stdout;
    expect(info).toContain(`Partition name: '${p.name}'`);
    expect(info).toContain(`Partition unique GUID: ${p.guid}`);
    expect(info).toContain(`Attribute flags: ${(p.attributes ?? 0n).toString(16).toUpperCase().padStart(16, '0')}`);
  });
}

describe('GPT planner', () => {
  it('places the default A/B layout on 1 MiB boundaries, STATE taking the aligned rest', () => {
    const ps = planPartitions(4 * GiB, defaultSpecs());
    expect(ps.map((p) => [p.name, p.firstLba, p.lastLba])).toEqual([
      ['ESP', 2048, 2048 + 524288 - 1],
      ['ROOT-A', 526336, 526336 + 2097152 - 1],
      ['ROOT-B', 2623488, 2623488 + 2097152 - 1],
      ['STATE', 4720640, 8388608 - 2048 - 1],
    ]);
    expect(ps[2]!.attributes).toBe((1n << 63n) | 4n);
  });

  it('rounds odd sizes up to sectors and the next partition up to the alignment', () => {
    const ps = planPartitions(64 * MiB, [
      { name: 'a', typeGuid: LINUX, guid: derivedGuid('a'), size: 1000 },
      { name: 'b', typeGuid: LINUX, guid: derivedGuid('b'), size: 512 },
    ]);
    expect(ps.map((p) => [p.firstLba, p.lastLba])).toEqual([[2048, 2049], [4096, 4096]]);
  });

  it('refuses a layout that does not fit, naming the partition', () => {
    expect(() => planPartitions(2 * GiB, defaultSpecs())).toThrow(/partition 3 \("ROOT-B"\) does not fit/);
    const full = defaultSpecs().slice(0, 3);
    const exact = 2048 * 512 + 256 * MiB + 2 * GiB;
    expect(() => planPartitions(exact + 33 * 512, [...full, { name: 'STATE', typeGuid: LINUX, guid: derivedGuid('s'), size: 'rest' }])).toThrow(
      /partition 4 \("STATE"\) does not fit/,
    );
    expect(() => planPartitions(4 * GiB, [{ name: 'x', typeGuid: LINUX, guid: derivedGuid('x'), size: 'rest' }, ...defaultSpecs()])).toThrow(
      /partition 1 \("x"\) has size 'rest' but is not the last/,
    );
  });

  it('refuses bad names, GUIDs, overlaps and disk sizes', () => {
    const base = defaultLayout();
    const bad = (mut: (l: GptLayout) => void) => {
      const l = structuredClone(base);
      mut(l);
      return () => gptRegions(l);
    };
    expect(bad((l) => (l.partitions[0]!.name = 'x'.repeat(37)))).toThrow(/partition 1 .* at most 36/);
    expect(bad((l) => (l.partitions[1]!.guid = 'nope'))).toThrow(/partition 2 \("ROOT-A"\) GUID "nope" is not a GUID/);
    expect(bad((l) => (l.partitions[1]!.guid = l.partitions[0]!.guid))).toThrow(/also used by partition 1/);
    expect(bad((l) => (l.partitions[2]!.firstLba = l.partitions[1]!.lastLba))).toThrow(/partition 3 \("ROOT-B"\) overlaps partition 2/);
    expect(bad((l) => (l.partitions[3]!.lastLba = l.diskSize / 512 - 1))).toThrow(/outside the usable sectors/);
    expect(bad((l) => (l.diskSize += 100))).toThrow(/multiple of 512/);
  });
});

describe('GPT writer and reader', () => {
  it('writes only the first and last 33 sectors, deterministically', () => {
    const l = defaultLayout();
    const a = gptRegions(l);
    expect(a.map((r) => [r.offset, r.data.length])).toEqual([
      [0, 512],
      [512, 512],
      [1024, 16384],
      [l.diskSize - 33 * 512, 16384],
      [l.diskSize - 512, 512],
    ]);
    const b = gptRegions(defaultLayout());
    a.forEach((r, i) => expect(Buffer.from(r.data).equals(Buffer.from(b[i]!.data))).toBe(true));
  });

  it('sgdisk -v finds no problems and sgdisk/sfdisk show the same names, GUIDs, types, ranges, attributes', async () => {
    needTool('sgdisk', 'gdisk');
    needTool('sfdisk', 'fdisk');
    const dir = tempDir('gpt');
    try {
      const l = defaultLayout();
      l.partitions[0]!.name = 'EFI System Partition ü ✓';
      expectOraclesAgree(await diskFile(l, dir.path), l);
    } finally {
      dir.cleanup();
    }
  });

  it('reads back its own table from a file through a (offset, length) reader', async () => {
    const dir = tempDir('gpt-r');
    try {
      const l = defaultLayout(64 * GiB);
      const f = await diskFile(defaultLayout(64 * GiB), dir.path);
      const r = await fileReader(f);
      try {
        const got = await readGpt(r.read);
        expect(got.source).toBe('primary');
        expect([got.primaryValid, got.backupValid, got.diskSize, got.diskGuid]).toEqual([true, true, l.diskSize, l.diskGuid]);
        expect(got.partitions).toEqual(l.partitions.map((p, i) => ({ ...p, attributes: p.attributes ?? 0n, number: i + 1 })));
      } finally {
        await r.close();
      }
    } finally {
      dir.cleanup();
    }
  });

  it('handles a 3 TiB disk: protective MBR capped at 2^32-1 sectors, read without loading the disk', async () => {
    needTool('sgdisk', 'gdisk');
    needTool('sfdisk', 'fdisk');
    const dir = tempDir('gpt-big');
    try {
      const l = defaultLayout(3 * 1024 * GiB);
      const f = await diskFile(l, dir.path);
      expectOraclesAgree(f, l);
      const r = await fileReader(f);
      let bytesRead = 0;
      try {
        const got = await readGpt(async (o, n) => {
          bytesRead += n;
          return r.read(o, n);
        });
        expect(got.partitions.map((p) => p.name)).toEqual(['ESP', 'ROOT-A', 'ROOT-B', 'STATE']);
        expect(got.diskSize).toBe(l.diskSize);
        const head = await r.read(446, 16);
        expect(Buffer.from(head).readUInt32LE(12)).toBe(0xffff_ffff);
      } finally {
        await r.close();
      }
      expect(bytesRead).toBe(2 * (512 + 16384));
    } finally {
      dir.cleanup();
    }
  });

  it('falls back to the backup table when the primary is damaged, and rejects a disk with neither', async () => {
    const l: GptLayout = { diskSize: 64 * MiB, diskGuid: derivedGuid('small'), partitions: [] };
    l.partitions = planPartitions(l.diskSize, [
      { name: 'ESP', typeGuid: ESP, guid: derivedGuid('e'), size: 8 * MiB },
      { name: 'STATE', typeGuid: LINUX, guid: derivedGuid('s'), size: 'rest' },
    ]);
    const buf = new Uint8Array(l.diskSize);
    await writeGpt(l, bufferSink(buf));
    const flip = (i: number) => (buf[i] = buf[i]! ^ 1);
    flip(2 * 512 + 60); // a byte of entry 1's name: the entry array CRC breaks
    const got = await readGpt(buf);
    expect([got.source, got.primaryValid, got.backupValid]).toEqual(['backup', false, true]);
    expect(got.partitions.map((p) => p.name)).toEqual(['ESP', 'STATE']);
    flip(buf.length - 512 + 20); // inside the backup header
    await expect(readGpt(buf)).rejects.toThrow(/primary entry array CRC32 mismatch; backup header CRC32 mismatch/);
  });

  it('reads a table made by sgdisk the way sfdisk does', async () => {
    needTool('sgdisk', 'gdisk');
    needTool('sfdisk', 'fdisk');
    const dir = tempDir('gpt-o');
    try {
      const f = join(dir.path, 'theirs.img');
      const fh = await open(f, 'w');
      await fh.truncate(100 * MiB);
      await fh.close();
      const mk = run('sgdisk', [
        '-U', '11111111-2222-3333-4444-555555555555',
        '-n', '1:2048:+20M', '-t', '1:EF00', '-c', '1:ESP', '-u', '1:AAAAAAAA-2222-3333-4444-555555555555',
        '-n', '3:0:+10M', '-t', '3:8304', '-c', '3:ROOT B', '-A', '3:set:2',
        '-n', '2:0:0', '-t', '2:8300', '-c', '2:STATE',
        f,
      ]);
      expect(mk.code, mk.stdout + mk.stderr).toBe(0);
      const got = await readGpt(readFileSync(f));
      const sf = (JSON.parse(run('sfdisk', ['--json', f]).stdout) as SfdiskJson).partitiontable;
      expect(got.diskGuid).toBe(sf.id);
      expect(got.partitions.map((p) => [p.name, p.typeGuid, p.guid, p.firstLba, p.lastLba - p.firstLba + 1])).toEqual(
        sf.partitions.map((p) => [p.name, p.type, p.uuid, p.start, p.size]),
      );
      expect(got.partitions.map((p) => p.number)).toEqual([1, 2, 3]);
      expect(got.partitions[2]!.attributes).toBe(4n);
      // Our writer re-emitting what we read satisfies the same oracles.
      const again: GptLayout = { diskSize: got.diskSize, diskGuid: got.diskGuid, partitions: got.partitions.map(({ number: _n, ...p }) => p) };
      // sgdisk ends its last partition at the last usable sector, not on a boundary.
      expectOraclesAgree(await diskFile(again, dir.path, 'ours.img'), again, { unalignedEnds: true });
    } finally {
      dir.cleanup();
    }
  });

  it('property: random layouts pass sgdisk -v and read back unchanged', async () => {
    needTool('sgdisk', 'gdisk');
    needTool('sfdisk', 'fdisk');
    const dir = tempDir('gpt-p');
    try {
      let n = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(
            fc.record({
              mib: fc.integer({ min: 1, max: 40 }),
              extra: fc.integer({ min: 0, max: 511 }),
              name: fc.string({ maxLength: 36, unit: 'binary' }).filter((s) => !s.includes('\0') && s.length <= 36),
              attrs: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((a) => a & ~0x2n),
            }),
            { minLength: 1, maxLength: 12 },
          ),
          fc.boolean(),
          async (parts, rest) => {
            const specs: PartitionSpec[] = parts.map((p, i) => ({
              name: p.name,
              typeGuid: i % 2 ? LINUX : ROOT_X64,
              guid: derivedGuid('p', String(n), String(i)),
              size: p.mib * MiB,
              attributes: p.attrs,
            }));
            if (rest) specs.push({ name: 'rest', typeGuid: LINUX, guid: derivedGuid('p', String(n), 'rest'), size: 'rest' });
            const diskSize = (parts.reduce((s, p) => s + p.mib + 1, 0) + 3) * MiB;
            const l: GptLayout = { diskSize, diskGuid: derivedGuid('disk', String(n)), partitions: planPartitions(diskSize, specs) };
            const f = await diskFile(l, dir.path, `p${n++}.img`);
            const r = await fileReader(f);
            const got = await readGpt(r.read).finally(() => r.close());
            expect(got.partitions.map(({ number: _n, ...p }) => p)).toEqual(l.partitions.map((p) => ({ ...p, attributes: p.attributes ?? 0n })));
            const v = run('sgdisk', ['-v', f]);
            expect(v.stdout, v.stderr).toContain('No problems found');
            const sf = (JSON.parse(run('sfdisk', ['--json', f]).stdout) as SfdiskJson).partitiontable;
            expect(sf.partitions.map((p) => [p.start, p.size, p.uuid])).toEqual(
              l.partitions.map((p) => [p.firstLba, p.lastLba - p.firstLba + 1, p.guid]),
            );
            rmSync(f);
          },
        ),
        { numRuns: 20 },
      );
    } finally {
      dir.cleanup();
    }
  });
});
