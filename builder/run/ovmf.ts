import { access } from 'node:fs/promises';
import { MissingToolError } from '../util/errors.ts';

export interface OvmfFirmware {
  code: string;
  vars: string;
}

/** Debian's `ovmf` package: the 4 MiB flash builds, plain or with Secure Boot enforced. */
const CANDIDATES: Record<'plain' | 'secure-boot', OvmfFirmware[]> = {
  plain: [
    { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
    { code: '/usr/share/OVMF/OVMF_CODE.fd', vars: '/usr/share/OVMF/OVMF_VARS.fd' },
  ],
  'secure-boot': [{ code: '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' }],
};

export async function findOvmf(kind: 'plain' | 'secure-boot' = 'plain'): Promise<OvmfFirmware> {
  for (const c of CANDIDATES[kind]) {
    try {
      await access(c.code);
      await access(c.vars);
      return c;
    } catch {
      /* try the next layout */
    }
  }
  throw new MissingToolError('OVMF firmware', 'ovmf', `none of ${CANDIDATES[kind].map((c) => c.code).join(', ')} exists`);
}
