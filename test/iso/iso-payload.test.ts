import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { planPartitions, writeGpt } from '../../builder/formats/gpt.ts';
import { diskPayload, PAYLOAD_BLOCK } from '../../builder/iso/payload.ts';
import { PARTITION_TYPES } from '../../builder/formats/gpt.ts';
import { ARCHES } from '../../builder/arch.ts';
import { derivedGuid } from '../../builder/util/guid.ts';
import { fileHandleSink } from '../../builder/util/sink.ts';
import { tempDir } from '../helpers/oracle-formats.ts';
import { noise, sha } from '../helpers/installer-fixtures.ts';

const MiB = 1 << 20;

/**
 * The installer's payload, applied as the on-device /init applies it (data runs copied, zero
 * runs zeroed, then MBR, primary header and backup table), gives back the build's disk on a
 * disk that held other bytes before.
 */
describe('the ISO installer payload', () => {
  it('rebuilds the disk from its map, data and GPT pieces, zeroing partition heads the build left empty', async () => {
    const tmp = tempDir('ossify-iso-payload-');
    try {
      const size = 12 * MiB;
      const disk = join(tmp.path, 'disk.raw');
      const spec = (name: string, typeGuid: string, bytes: number) => ({ name, typeGuid, guid: derivedGuid('p', name), size: bytes });
      const partitions = planPartitions(size, [
        spec('ESP', PARTITION_TYPES.esp, 3 * MiB),
        spec('ROOT-A', ARCHES.x86_64.rootType, 3 * MiB),
        spec('ROOT-B', ARCHES.x86_64.rootType, 2 * MiB),
        spec('STATE', PARTITION_TYPES.linuxData, 2 * MiB),
      ]);
      const fh = await open(disk, 'w+');
      await fh.truncate(size);
      await writeGpt({ diskSize: size, diskGuid: derivedGuid('d'), partitions }, fileHandleSink(fh));
      // ESP: a block at its start and one in the middle (a hole between); ROOT-A: 200 KiB from its start.
      await fh.write(noise(4096, 1), 0, 4096, partitions[0]!.firstLba * 512);
      await fh.write(noise(70_000, 2), 0, 70_000, partitions[0]!.firstLba * 512 + MiB + 100);
      await fh.write(noise(200 * 1024, 3), 0, 200 * 1024, partitions[1]!.firstLba * 512);
      await fh.close();

      const p = await diskPayload(disk, join(tmp.path, 'disk.data'));
      const data = readFileSync(join(tmp.path, 'disk.data'));
      expect(p.diskSize).toBe(size);
      expect(data.length).toBe(p.dataSize);
      expect(sha(data)).toBe(p.dataSha256);
      expect(p.labels).toEqual(['ESP', 'ROOT-A', 'ROOT-B', 'STATE']);
      expect(data.subarray(0, 1024).every((b) => b === 0)).toBe(true);
      const lines = p.map.trim().split('\n');
      // The first 2 MiB of every partition are the build's on the target: what the build left
      // empty there is zeroed (stale superblocks, STATE's seed area and the /var file system's head).
      const head = (i: number) => (partitions[i]!.firstLba * 512) / PAYLOAD_BLOCK;
      expect(lines.filter((l) => l.startsWith('zero'))).toEqual([
        `zero ${head(0) + 1} 15`,
        `zero ${head(0) + 18} 14`,
        `zero ${head(1) + 4} 28`,
        `zero ${head(2)} 32`,
        `zero ${head(3)} 32`,
      ]);

      // A target twice the size, full of old bytes.
      const target = Buffer.from(noise(2 * size, 9));
      for (const l of lines) {
        const [kind, off, count, from] = l.split(' ');
        const o = Number(off) * PAYLOAD_BLOCK;
        const n = Number(count) * PAYLOAD_BLOCK;
        if (kind === 'data') data.copy(target, o, Number(from) * PAYLOAD_BLOCK, Number(from) * PAYLOAD_BLOCK + n);
        else target.fill(0, o, o + n);
      }
      Buffer.from(p.mbr).copy(target, 0);
      Buffer.from(p.header).copy(target, 512);
      const original = readFileSync(disk);
      // Everything the build wrote before its backup table is on the target, byte for byte.
      const end = size - 33 * 512;
      for (let o = 0; o < end; o += PAYLOAD_BLOCK) {
        const want = original.subarray(o, Math.min(o + PAYLOAD_BLOCK, end));
        if (want.some((b) => b !== 0)) expect(target.subarray(o, o + want.length).equals(want), `block at ${o}`).toBe(true);
      }
      expect(Buffer.from(p.entries).equals(original.subarray(1024, 1024 + 16384))).toBe(true);
    } finally {
      tmp.cleanup();
    }
  });
});
