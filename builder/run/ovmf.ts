import { access, open } from 'node:fs/promises';
import { archByRootType, DEFAULT_ARCH, qemuFor } from '../arch.ts';
import { readGpt, SECTOR } from '../formats/gpt.ts';
import { InputError, MissingToolError } from '../util/errors.ts';

export interface UefiFirmware {
  code: string;
  vars: string;
}

/** The UEFI firmware `ossify run` boots an architecture with (builder/arch.ts: OVMF, AAVMF). */
export async function findFirmware(arch: string, kind: 'plain' | 'secure-boot' = 'plain'): Promise<UefiFirmware> {
  const q = qemuFor(arch);
  const candidates = kind === 'plain' ? q.firmware : q.secureBootFirmware;
  if (!candidates) throw new InputError(`ossify run has no Secure Boot firmware for ${arch}`, { hint: 'boot it without --secure-boot' });
  for (const c of candidates) {
    try {
      await access(c.code);
      await access(c.vars);
      return c;
    } catch {
      /* try the next layout */
    }
  }
  throw new MissingToolError(`UEFI firmware for ${arch}`, q.firmwarePackage, `none of ${candidates.map((c) => c.code).join(', ')} exists`);
}

/**
 * The architecture of a disk image, by its root partitions' type (builder/arch.ts); a disk
 * that is no ossify disk (no GPT, no known root type) is taken to be DEFAULT_ARCH's.
 */
export async function diskArch(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const { size } = await fh.stat();
    const read = async (offset: number, length: number) => {
      const buf = Buffer.alloc(length);
      await fh.read(buf, 0, length, offset);
      return new Uint8Array(buf.buffer, buf.byteOffset, length);
    };
    const gpt = await readGpt(read, { diskSize: size - (size % SECTOR) }).catch(() => undefined);
    const root = gpt?.partitions.find((p) => p.name.startsWith('ROOT-'));
    return (root && archByRootType(root.typeGuid)?.uname) ?? DEFAULT_ARCH;
  } finally {
    await fh.close();
  }
}
