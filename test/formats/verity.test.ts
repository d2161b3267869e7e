import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  computeVerity,
  decodeVeritySuperblock,
  VerityHasher,
  verityTable,
  writeVerityTree,
  type VerityResult,
} from '../../builder/formats/verity.ts';
import { fileHandleSink } from '../../builder/util/sink.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';

const dir = mkdtempSync(join(tmpdir(), 'ossify-verity-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let seq = 0;
const tmp = (name: string) => join(dir, `${seq++}-${name}`);

function needVeritysetup(): void {
  requireTool('veritysetup', 'cryptsetup-bin');
}

/** Deterministic bytes (sha256 counter mode), so a failure reproduces. */
function noise(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0, ctr = 0; i < size; ctr++) {
    const h = createHash('sha256').update(`${seed}:${ctr}`).digest();
    i += h.copy(out, i);
  }
  return out;
}

/** What every caller of computeVerity must do: the data occupies whole data blocks, zero-padded. */
function padded(data: Buffer, block = 4096): Buffer {
  const out = Buffer.alloc(Math.ceil(data.length / block) * block);
  data.copy(out);
  return out;
}

function dumpFields(out: string): Record<string, string> {
  const f: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) f[m[1]!.trim()] = m[2]!.trim();
  }
  return f;
}

/** veritysetup format on the same data, salt and uuid: root hash and hash area must match ours. */
function checkAgainstFormat(dataPath: string, v: VerityResult): void {
  const theirs = tmp('hash-theirs');
  const out = runOk('veritysetup', [
    'format', dataPath, theirs, `--salt=${v.salt || '-'}`, `--uuid=${v.uuid}`,
    `--data-block-size=${v.dataBlockSize}`, `--hash-block-size=${v.hashBlockSize}`,
  ]);
  expect(dumpFields(out)['Root hash']).toBe(v.rootHash);
  const bytes = readFileSync(theirs);
  // veritysetup leaves the hash file at its last written byte; our tree is whole blocks.
  expect(Buffer.from(v.tree.subarray(0, bytes.length)).equals(bytes)).toBe(true);
  expect(v.tree.subarray(bytes.length).every((b) => b === 0)).toBe(true);
}

describe('dm-verity hash tree', () => {
  it('separate hash file: veritysetup verify and dump accept it, format yields identical bytes', async () => {
    needVeritysetup();
    const data = tmp('data');
    writeFileSync(data, noise(3 * 1024 * 1024 + 5 * 4096, 1)); // > 128 blocks: two levels
    const v = await computeVerity(data);
    const hash = tmp('hash');
    writeFileSync(hash, v.tree);

    expect(run('veritysetup', ['verify', data, hash, v.rootHash]).code).toBe(0);
    const dump = dumpFields(runOk('veritysetup', ['dump', hash]));
    expect(dump).toMatchObject({
      UUID: v.uuid,
      'Hash type': '1',
      'Data blocks': String(v.dataBlocks),
      'Data block size': '4096',
      'Hash block size': '4096',
      'Hash algorithm': 'sha256',
      Salt: v.salt,
    });
    expect(v.dataBlocks).toBe(773);
    expect(v.salt).toMatch(/^[0-9a-f]{64}$/);
    checkAgainstFormat(data, v);
  });

  it('data and tree in one file with --hash-offset, as on a ROOT partition', async () => {
    needVeritysetup();
    const raw = noise(2 * 1024 * 1024 + 123, 2);
    const data = tmp('data');
    writeFileSync(data, raw);
    const v = await computeVerity(data);
    expect(v.hashOffset).toBe(Math.ceil(raw.length / 4096) * 4096);
    expect(v.dataSize).toBe(raw.length);

    const img = tmp('partition');
    const fh = await open(img, 'w');
    await fh.write(raw, 0, raw.length, 0); // the gap up to hashOffset stays zero: the padding
    await fh.write(v.tree, 0, v.tree.length, v.hashOffset);
    await fh.close();
    expect(run('veritysetup', ['verify', img, img, v.rootHash, `--hash-offset=${v.hashOffset}`]).code).toBe(0);
    const dump = dumpFields(runOk('veritysetup', ['dump', img, `--hash-offset=${v.hashOffset}`]));
    expect(dump['Data blocks']).toBe(String(v.dataBlocks));

    // veritysetup format into the same layout gives the same hash area.
    const img2 = tmp('partition2');
    writeFileSync(img2, padded(raw));
    const out = runOk('veritysetup', [
      'format', img2, img2, `--hash-offset=${v.hashOffset}`, `--data-blocks=${v.dataBlocks}`, `--salt=${v.salt}`, `--uuid=${v.uuid}`,
    ]);
    expect(dumpFields(out)['Root hash']).toBe(v.rootHash);
    expect(readFileSync(img2).subarray(v.hashOffset).equals(Buffer.from(v.tree))).toBe(true);
  });

  it('writeVerityTree zeroes stale bytes after the data on a reused partition', async () => {
    needVeritysetup();
    const raw = noise(300_000 + 17, 9);
    const data = tmp('data');
    writeFileSync(data, raw);
    const v = await computeVerity(data);
    const part = tmp('reused-partition');
    writeFileSync(part, Buffer.alloc(v.hashOffset + v.tree.length + 8192, 0xee)); // a previous release's bytes
    const fh = await open(part, 'r+');
    await fh.write(raw, 0, raw.length, 0);
    await writeVerityTree(fileHandleSink(fh), v);
    await fh.close();
    expect(run('veritysetup', ['verify', part, part, v.rootHash, `--hash-offset=${v.hashOffset}`]).code).toBe(0);
  });

  it('places the tree at a chosen hash offset (e.g. 1 MiB-aligned) and the table follows it', async () => {
    needVeritysetup();
    const raw = noise(200_000, 10);
    const data = tmp('data');
    writeFileSync(data, raw);
    const v = await computeVerity(data, { hashOffset: 1024 * 1024 });
    expect(v.hashOffset).toBe(1024 * 1024);
    const img = tmp('partition');
    const fh = await open(img, 'w');
    await fh.write(raw, 0, raw.length, 0);
    await writeVerityTree(fileHandleSink(fh), v);
    await fh.close();
    expect(run('veritysetup', ['verify', img, img, v.rootHash, '--hash-offset=1048576']).code).toBe(0);
    expect(verityTable(v, { dataDevice: 'd' }).table.split(' ')[9]).toBe(String(1024 * 1024 / 4096 + 1));
    const overlapping = await computeVerity(data, { hashOffset: 4096 });
    expect(() => verityTable(overlapping, { dataDevice: 'd' })).toThrow(/inside the data/);
    // On a separate hash device the tree can start at 0.
    const separate = await computeVerity(data, { hashOffset: 0 });
    const hash = tmp('hash-at-0');
    writeFileSync(hash, separate.tree);
    expect(verityTable(separate, { dataDevice: 'd', hashDevice: 'h' }).table.split(' ')[9]).toBe('1');
    const padData = tmp('padded');
    writeFileSync(padData, padded(raw));
    expect(run('veritysetup', ['verify', padData, hash, separate.rootHash]).code).toBe(0);
    await expect(computeVerity(data, { hashOffset: 1000_000 })).rejects.toThrow(/multiple/);
  });

  it('a flipped data byte or tree byte makes verify fail', async () => {
    needVeritysetup();
    const raw = noise(600 * 1024, 3);
    const data = tmp('data');
    writeFileSync(data, raw);
    const v = await computeVerity(data);
    const hash = tmp('hash');
    writeFileSync(hash, v.tree);
    expect(run('veritysetup', ['verify', data, hash, v.rootHash]).code).toBe(0);

    const bad = Buffer.from(raw);
    bad[77_777]! ^= 0x01;
    const badData = tmp('bad-data');
    writeFileSync(badData, bad);
    const r = run('veritysetup', ['verify', badData, hash, v.rootHash]);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/corrupt|fail|mismatch/i);

    const badTree = Buffer.from(v.tree);
    badTree[4096 + 100]! ^= 0x80;
    const badHash = tmp('bad-hash');
    writeFileSync(badHash, badTree);
    expect(run('veritysetup', ['verify', data, badHash, v.rootHash]).code).not.toBe(0);
    expect(run('veritysetup', ['verify', data, hash, 'ff'.repeat(32)]).code).not.toBe(0);
  });

  it('the dm table names the right hash start block, salt and sizes', async () => {
    needVeritysetup();
    const raw = noise(1024 * 1024, 4);
    const data = tmp('data');
    writeFileSync(data, raw);
    const v = await computeVerity(data);
    const img = tmp('partition');
    writeFileSync(img, Buffer.concat([raw, Buffer.from(v.tree)]));

    const t = verityTable(v, { dataDevice: '/dev/vda2' });
    const f = t.table.split(' ');
    expect(f.slice(0, 4)).toEqual(['0', String((v.dataBlocks * 4096) / 512), 'verity', '1']);
    expect(f.slice(4, 6)).toEqual(['/dev/vda2', '/dev/vda2']);
    expect(f.slice(13)).toEqual(['1', 'restart_on_corruption']);
    const [dbs, hbs, blocks, hashStart, alg, root, salt] = f.slice(6, 13);
    expect([alg, root, salt]).toEqual(['sha256', v.rootHash, v.salt]);
    expect(Number(hashStart)).toBe(v.hashOffset / 4096 + 1);
    // The kernel reads no superblock: give veritysetup exactly the table's numbers and no superblock.
    const r = run('veritysetup', [
      'verify', img, img, root!, '--no-superblock', `--data-blocks=${blocks}`, `--data-block-size=${dbs}`,
      `--hash-block-size=${hbs}`, `--hash-offset=${Number(hashStart) * Number(hbs)}`, `--salt=${salt}`, '--hash=sha256',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);

    expect(t.dmsetupArgv).toEqual(['dmsetup', 'create', 'root', '--readonly', '--table', t.table]);
    expect(t.veritysetupOpenArgv).toEqual([
      'veritysetup', 'open', '/dev/vda2', 'root', '/dev/vda2', v.rootHash, `--hash-offset=${v.hashOffset}`, '--restart-on-corruption',
    ]);
    expect(t.devicePath).toBe('/dev/mapper/root');
    expect(t.env).toEqual({ DM_DISABLE_UDEV: '1' });
    expect(verityTable(v, { dataDevice: 'a', hashDevice: 'b', onCorruption: 'eio', name: 'x' }).table).not.toMatch(/corruption/);
    expect(verityTable(v, { dataDevice: 'a', onCorruption: 'panic' }).table).toMatch(/ 1 panic_on_corruption$/);
    expect(() => verityTable(v, { dataDevice: 'a', name: 'bad name' })).toThrow(/device-mapper name/);
  });

  it('a single data block has no levels: the root is that block’s salted digest', async () => {
    needVeritysetup();
    const data = tmp('one');
    writeFileSync(data, noise(4096, 5));
    const salt = new Uint8Array(32).fill(7);
    const v = await computeVerity(data, { salt });
    expect(v.tree.length).toBe(4096);
    expect(v.rootHash).toBe(createHash('sha256').update(salt).update(readFileSync(data)).digest('hex'));
    checkAgainstFormat(data, v);
  });

  it('is deterministic and content-addressed: salt and uuid follow the data, never randomness', async () => {
    const a = tmp('a');
    const b = tmp('b');
    writeFileSync(a, noise(50_000, 6));
    writeFileSync(b, noise(50_000, 6));
    const va = await computeVerity(a);
    const vb = await computeVerity(b);
    expect(vb).toEqual(va);
    writeFileSync(b, noise(50_000, 7));
    const vc = await computeVerity(b);
    expect(vc.salt).not.toBe(va.salt);
    expect(vc.uuid).not.toBe(va.uuid);
    // Passing the known sha256 skips a pass and gives the same answer.
    const sha = createHash('sha256').update(readFileSync(a)).digest('hex');
    expect(await computeVerity(a, { dataSha256: sha })).toEqual(va);
    const sb = decodeVeritySuperblock(va.tree);
    expect(sb).toMatchObject({ version: 1, hashType: 1, algorithm: 'sha256', uuid: va.uuid, dataBlocks: va.dataBlocks });
    expect(Buffer.from(sb.salt).toString('hex')).toBe(va.salt);
  });

  it('property: any size, chunking and salt agrees with veritysetup (unpadded data counts as zero-padded)', async () => {
    needVeritysetup();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.integer({ min: 1, max: 40_000 }),
          fc.integer({ min: 127 * 4096, max: 130 * 4096 }), // the one-level/two-level boundary
          fc.constantFrom(4096, 128 * 4096, 128 * 4096 + 1, 129 * 4096),
        ),
        fc.integer({ min: 0, max: 1000 }),
        fc.uint8Array({ minLength: 0, maxLength: 64 }),
        fc.array(fc.integer({ min: 1, max: 20_000 }), { minLength: 1, maxLength: 8 }),
        fc.constantFrom(512, 4096),
        async (size, seed, salt, cuts, hashBlockSize) => {
          const raw = noise(size, seed);
          const data = tmp('prop-raw');
          writeFileSync(data, raw);
          const v = await computeVerity(data, { salt, hashBlockSize });
          expect(v.dataBlocks).toBe(Math.ceil(size / 4096));

          // Streaming in arbitrary pieces gives the same tree.
          const h = new VerityHasher({ salt, hashBlockSize });
          for (let off = 0, i = 0; off < raw.length; i++) {
            const n = cuts[i % cuts.length]!;
            h.update(raw.subarray(off, off + n));
            off += n;
          }
          expect(h.finish()).toEqual(v);

          // The caller pads the data to the block size; then veritysetup agrees with us.
          const pad = tmp('prop-padded');
          writeFileSync(pad, padded(raw));
          expect(await computeVerity(pad, { salt, hashBlockSize })).toEqual({ ...v, dataSize: padded(raw).length });
          const hash = tmp('prop-hash');
          writeFileSync(hash, v.tree);
          const r = run('veritysetup', ['verify', pad, hash, v.rootHash]);
          expect(r.stderr).toBe('');
          expect(r.code).toBe(0);
          checkAgainstFormat(pad, v);
          rmSync(data);
          rmSync(pad);
          rmSync(hash);
        },
      ),
      { numRuns: 25, seed: 8 },
    );
  });

  it('rejects what it cannot represent', async () => {
    const empty = tmp('empty');
    writeFileSync(empty, '');
    await expect(computeVerity(empty)).rejects.toThrow(/empty/);
    expect(() => new VerityHasher({ salt: new Uint8Array(257) })).toThrow(/salt/);
    expect(() => new VerityHasher({ salt: new Uint8Array(1), dataBlockSize: 1000 })).toThrow(/power of two/);
  });
});
