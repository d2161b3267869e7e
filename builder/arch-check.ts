import { archByElfMachine, archByPeMachine, findArch } from './arch.ts';
import { parsePe } from './formats/pe/headers.ts';
import { InputError } from './util/errors.ts';

/** What an ELF program or a PE (EFI) binary says it runs on; undefined for anything else. */
export function binaryMachine(bytes: Uint8Array): { format: 'ELF' | 'PE'; machine: number; arch: string | undefined } | undefined {
  if (bytes.length >= 20 && bytes[0] === 0x7f && Buffer.from(bytes.subarray(1, 4)).toString('latin1') === 'ELF') {
    const machine = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint16(18, bytes[5] === 1);
    return { format: 'ELF', machine, arch: archByElfMachine(machine)?.uname };
  }
  try {
    const machine = parsePe(bytes).machine;
    return { format: 'PE', machine, arch: archByPeMachine(machine)?.uname };
  } catch {
    return undefined;
  }
}

/**
 * Refuses a program, boot loader or kernel built for another architecture than the build's:
 * the image would be made without complaint and then not start. Files that are neither ELF
 * nor PE are let through (nothing to tell by).
 */
export function assertBinaryArch(bytes: Uint8Array, arch: string, origin: string, hint: string): void {
  const want = findArch(arch);
  const got = binaryMachine(bytes);
  if (!want || !got) return;
  if (got.machine !== (got.format === 'ELF' ? want.elfMachine : want.peMachine)) {
    const name = got.arch ?? `${got.format} machine 0x${got.machine.toString(16)}`;
    throw new InputError(`${origin} is built for ${name}, but the build is ${want.uname}`, { hint });
  }
}
