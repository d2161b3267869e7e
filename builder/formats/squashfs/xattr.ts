import { InputError } from '../../util/errors.ts';
import { compareBytes } from '../../tree/tree.ts';
import type { Compressor } from './compress.ts';
import { NO_XATTR, XATTR_PREFIXES, XATTR_VALUE_OOL } from './constants.ts';
import { MetadataWriter, Rec } from './metadata.ts';

const enc = new TextEncoder();

interface XattrSet {
  pairs: { type: number; name: Uint8Array; value: Uint8Array; valueKey: string }[];
}

/**
 * Extended attributes: each distinct set of pairs is stored once and inodes refer to it by
 * index. A value that repeats (a common SELinux label, a capability blob) is stored in line
 * the first time and referenced out of line afterwards, as mksquashfs does.
 */
export class XattrTable {
  private readonly byKey = new Map<string, number>();
  private readonly sets: XattrSet[] = [];

  get count(): number {
    return this.sets.length;
  }

  /** Returns the index of this attribute set (NO_XATTR for none). */
  add(xattrs: Record<string, Uint8Array> | undefined, where: string): number {
    if (!xattrs) return NO_XATTR;
    const names = Object.keys(xattrs).sort(compareBytes);
    if (names.length === 0) return NO_XATTR;
    const pairs: XattrSet['pairs'] = [];
    for (const full of names) {
      const type = XATTR_PREFIXES.findIndex((p) => full.startsWith(p));
      if (type < 0) {
        throw new InputError(`${where}: extended attribute ${JSON.stringify(full)} cannot be stored in squashfs`, {
          hint: 'squashfs stores only user.*, trusted.* and security.* attributes',
        });
      }
      const name = enc.encode(full.slice(XATTR_PREFIXES[type]!.length));
      if (name.length === 0) throw new InputError(`${where}: extended attribute ${JSON.stringify(full)} has an empty name`);
      const value = xattrs[full]!;
      pairs.push({ type, name, value, valueKey: Buffer.from(value).toString('base64') });
    }
    const key = pairs.map((p) => `${p.type}:${Buffer.from(p.name).toString('base64')}=${p.valueKey}`).join(',');
    let idx = this.byKey.get(key);
    if (idx === undefined) {
      idx = this.sets.length;
      this.sets.push({ pairs });
      this.byKey.set(key, idx);
    }
    return idx;
  }

  /**
   * Lays the table out at image offset `at`: key/value blocks, the id records' blocks, then
   * the uncompressed header the superblock points to.
   */
  encode(comp: Compressor | null, at: number): { bytes: Uint8Array[]; size: number; headerAt: number } {
    const kv = new MetadataWriter(comp);
    const valueRefs = new Map<string, bigint>();
    const ids = new Rec(16 * this.sets.length);
    for (const set of this.sets) {
      const startPos = kv.position;
      const startLen = kv.uncompressedLength;
      for (const p of set.pairs) {
        // Only values big enough to gain from a reference (8 bytes) go out of line.
        const ref = p.value.length > 8 ? valueRefs.get(p.valueKey) : undefined;
        kv.append(new Rec(4 + p.name.length).u16(p.type | (ref !== undefined ? XATTR_VALUE_OOL : 0)).u16(p.name.length).bytes(p.name).done());
        if (ref !== undefined) {
          kv.append(new Rec(12).u32(8).u64(ref).done());
        } else {
          const vpos = kv.position;
          if (p.value.length > 8) valueRefs.set(p.valueKey, (BigInt(vpos.block) << 16n) | BigInt(vpos.offset));
          kv.append(new Rec(4 + p.value.length).u32(p.value.length).bytes(p.value).done());
        }
      }
      ids.u64((BigInt(startPos.block) << 16n) | BigInt(startPos.offset));
      ids.u32(set.pairs.length);
      ids.u32(kv.uncompressedLength - startLen);
    }
    const kvOut = kv.finish();
    const idw = new MetadataWriter(comp);
    idw.append(ids.done());
    const idOut = idw.finish();
    const idAt = at + kvOut.size;
    const header = new Rec(16 + 8 * idw.blockStarts.length).u64(at).u32(this.sets.length).u32(0);
    for (const s of idw.blockStarts) header.u64(idAt + s);
    const h = header.done();
    return {
      bytes: [...kvOut.chunks, ...idOut.chunks, h],
      size: kvOut.size + idOut.size + h.length,
      headerAt: idAt + idOut.size,
    };
  }
}
