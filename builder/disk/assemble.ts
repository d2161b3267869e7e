import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import type { FileTree } from '../tree/tree.ts';
import { fileHandleSink, type BlockSink } from '../util/sink.ts';
import { mergeExtents, recordingSink, type Extent } from '../util/extents.ts';
import { produceAtomic } from '../util/atomic.ts';
import { planPartitions, writeGpt } from '../formats/gpt.ts';
import { writeFat32 } from '../formats/fat/index.ts';
import { OssifyError } from '../util/errors.ts';
import { diskSizeFor, type DiskLayout } from './layout.ts';

export interface PlacedPartition {
  label: string;
  typeGuid: string;
  guid: string;
  offset: number;
  size: number;
}

export interface DiskSpec {
  layout: DiskLayout;
  esp: { tree: FileTree; label: string; serial: number };
  /**
   * Raw images written into partitions, by label: a file written at the start (ROOT-A → the
   * root image), or files at offsets (the squashfs at 0, its dm-verity tree after it).
   */
  images: Record<string, string | PartitionPiece[]>;
  /** Filled with the byte ranges written (everything else is a hole), sorted and merged. */
  written?: Extent[];
}

/** A file written at `offset` bytes into a partition. */
export interface PartitionPiece {
  path: string;
  offset: number;
}

/**
 * Writes a sparse raw disk: GPT, the FAT32 ESP, and partition images streamed in place.
 * Nothing is zero-filled, so a 1 GiB disk with a 20 MB rootfs costs 20 MB of writes.
 */
export async function assembleDisk(finalPath: string, spec: DiskSpec): Promise<PlacedPartition[]> {
  const diskSize = diskSizeFor(spec.layout);
  const planned = planPartitions(
    diskSize,
    spec.layout.partitions.map((p) => ({ name: p.label, typeGuid: p.typeGuid, guid: p.guid, size: p.size })),
  );
  const placed: PlacedPartition[] = planned.map((p) => ({
    label: p.name,
    typeGuid: p.typeGuid,
    guid: p.guid,
    offset: p.firstLba * 512,
    size: (p.lastLba - p.firstLba + 1) * 512,
  }));
  await produceAtomic(finalPath, async (tmp) => {
    const fh = await open(tmp, 'w+');
    try {
      await fh.truncate(diskSize);
      const written: Extent[] = [];
      const sinkAt = (base: number): BlockSink => recordingSink(fileHandleSink(fh, base), written, base);
      await writeGpt({ diskSize, diskGuid: spec.layout.diskGuid, partitions: planned }, sinkAt(0));
      const esp = placed.find((p) => p.label === 'ESP');
      if (!esp) throw new OssifyError('the disk layout has no ESP partition');
      await writeFat32(spec.esp.tree, { size: esp.size, label: spec.esp.label, serial: spec.esp.serial, hiddenSectors: esp.offset / 512 }, sinkAt(esp.offset));
      for (const [label, image] of Object.entries(spec.images)) {
        const part = placed.find((p) => p.label === label);
        if (!part) throw new OssifyError(`the disk layout has no partition ${label}`);
        for (const piece of typeof image === 'string' ? [{ path: image, offset: 0 }] : image) await copyInto(sinkAt(part.offset), piece.path, part, piece.offset);
      }
      if (spec.written) {
        spec.written.length = 0;
        for (const e of mergeExtents(written)) spec.written.push(e);
      }
    } finally {
      await fh.close();
    }
  });
  return placed;
}

async function copyInto(sink: BlockSink, image: string, part: PlacedPartition, start = 0): Promise<void> {
  let pos = start;
  for await (const chunk of createReadStream(image, { highWaterMark: 4 << 20 })) {
    const buf = chunk as Buffer;
    if (pos + buf.length > part.size) {
      throw new OssifyError(`${image} does not fit in partition ${part.label} (${part.size} bytes)`, {
        hint: 'raise disk.root in the profile',
      });
    }
    await sink.write(pos, buf);
    pos += buf.length;
  }
}
