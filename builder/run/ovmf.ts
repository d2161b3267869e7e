import { access } from 'node:fs/promises';
import { qemuFor } from '../arch.ts';
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
