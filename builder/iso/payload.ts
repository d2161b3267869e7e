import { createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { scanSparse, SPARSE_CHUNK } from '../cache/sparse.ts';
import { readGpt, SECTOR } from '../formats/gpt.ts';
import { InputError } from '../util/errors.ts';

/** The 64 KiB blocks of the installer's `disk.map` (dd's block size on the device). */
export const PAYLOAD_BLOCK = SPARSE_CHUNK;
/** The backup GPT (entries + header) at the end of a disk. */
const BACKUP_GPT_BYTES = 33 * SECTOR;
const ENTRIES_BYTES = 32 * SECTOR;
/**
 * How much of each partition start the target gets zeroed wherever the build left it empty:
 * stale superblocks of an earlier life of the disk, STATE's seed area (its first MiB) and the
 * head of the /var file system behind it (rootfs.os.var: state), which a fresh install must
 * not inherit.
 */
const ZERO_HEAD = 2 << 20;

export interface DiskPayload {
  /** The build's disk size: what a target needs. */
  diskSize: number;
  /** `disk.map` text (see installer-init.ts). */
  map: string;
  dataSize: number;
  dataSha256: string;
  mbr: Uint8Array;
  header: Uint8Array;
  entries: Uint8Array;
  labels: string[];
}

/**
 * Splits a built disk.raw into what the ISO installer writes: its non-zero 64 KiB blocks
 * (streamed to `dataPath`, in disk order) and a map of where they go, without the backup
 * GPT and with the first two sectors zeroed (the installer writes a protective MBR and a
 * primary header for the target's size last). Partitions whose first MiB the build left
 * empty get it zeroed on the target, so a reused disk shows no stale file system there.
 */
export async function diskPayload(diskPath: string, dataPath: string): Promise<DiskPayload> {
  const fh = await open(diskPath, 'r');
  let diskSize: number;
  let head: Buffer;
  let gpt: Awaited<ReturnType<typeof readGpt>>;
  try {
    diskSize = (await fh.stat()).size;
    head = Buffer.alloc(2 * SECTOR + ENTRIES_BYTES);
    await fh.read(head, 0, head.length, 0);
    gpt = await readGpt(async (o, n) => {
      const b = Buffer.alloc(n);
      await fh.read(b, 0, n, o);
      return b;
    }, { diskSize });
  } finally {
    await fh.close();
  }
  if (gpt.source !== 'primary') throw new InputError(`${diskPath}: the primary GPT is damaged`);
  if (diskSize % PAYLOAD_BLOCK !== 0) throw new InputError(`${diskPath}: ${diskSize} bytes is not a whole number of ${PAYLOAD_BLOCK}-byte blocks`);
  const backupStart = diskSize - BACKUP_GPT_BYTES;
  const out = createWriteStream(dataPath);
  const hash = createHash('sha256');
  const runs: { off: number; count: number; from: number }[] = [];
  let blocks = 0;
  await scanSparse(diskPath, {
    chunkSize: PAYLOAD_BLOCK,
    digest: false,
    onChunk: async (data, chunk) => {
      if (chunk.offset + chunk.length > backupStart) return;
      if (chunk.offset === 0) data.fill(0, 0, 2 * SECTOR);
      const block = chunk.offset / PAYLOAD_BLOCK;
      const last = runs[runs.length - 1];
      if (last && last.off + last.count === block) last.count++;
      else runs.push({ off: block, count: 1, from: blocks });
      blocks++;
      hash.update(data);
      if (!out.write(data)) await once(out, 'drain');
    },
  });
  out.end();
  await once(out, 'finish');
  const lines = runs.map((r) => ({ off: r.off, line: `data ${r.off} ${r.count} ${r.from}` }));
  const written = (block: number) => runs.some((r) => r.off <= block && block < r.off + r.count);
  for (const p of gpt.partitions) {
    const start = (p.firstLba * SECTOR) / PAYLOAD_BLOCK;
    const count = Math.min(ZERO_HEAD, (p.lastLba - p.firstLba + 1) * SECTOR) / PAYLOAD_BLOCK;
    if ((p.firstLba * SECTOR) % PAYLOAD_BLOCK !== 0 || !Number.isInteger(count)) continue;
    for (let b = start; b < start + count; ) {
      if (written(b)) {
        b++;
        continue;
      }
      let n = 1;
      while (b + n < start + count && !written(b + n)) n++;
      lines.push({ off: b, line: `zero ${b} ${n}` });
      b += n;
    }
  }
  lines.sort((a, b) => a.off - b.off);
  return {
    diskSize,
    map: lines.map((l) => `${l.line}\n`).join(''),
    dataSize: blocks * PAYLOAD_BLOCK,
    dataSha256: hash.digest('hex'),
    mbr: head.subarray(0, SECTOR),
    header: head.subarray(SECTOR, 2 * SECTOR),
    entries: head.subarray(2 * SECTOR),
    labels: gpt.partitions.map((p) => p.name),
  };
}
