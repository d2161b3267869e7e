import { InputError } from '../util/errors.ts';
import {
  addPeSections,
  findSection,
  parsePe,
  PeFormatError,
  SCN_CNT_CODE,
  SCN_CNT_INITIALIZED_DATA,
  SCN_MEM_READ,
  sectionData,
  type NewSection,
} from '../formats/pe/index.ts';

/**
 * Unified kernel image: systemd-stub (`linuxx64.efi.stub` from systemd-boot-efi) with the
 * kernel, initrd, command line, os-release and uname appended as PE sections. The stub finds
 * them by name at run time; one signed file then covers everything the firmware starts.
 *
 * Section order and flags follow systemd's ukify: `.osrel .cmdline .uname .initrd .linux`,
 * with `.linux` last. systemd ≥ 252 hands `.linux` to the firmware's LoadImage (a copy), but
 * kernels booted through the older EFI handover path run in place and decompress past their
 * own end, which must not overwrite the initrd — hence last. `.linux` is marked as code for the
 * same reason; the rest are read-only initialised data.
 */

export interface UkiInput {
  /** The stub PE (e.g. /usr/lib/systemd/boot/efi/linuxx64.efi.stub), unsigned. */
  stub: Uint8Array;
  /** An EFI-stub kernel (bzImage, itself a PE: "MZ" … "PE\0\0"). */
  kernel: Uint8Array;
  /** The initramfs (cpio, possibly compressed); an empty one is left out. */
  initrd: Uint8Array;
  /** Kernel command line. Under Secure Boot the stub ignores any other command line. */
  cmdline: string;
  /** os-release text: systemd-boot lists the UKI by its PRETTY_NAME / VERSION_ID. */
  osRelease: string;
  /** Kernel release (`uname -r`), e.g. 6.1.0-56-cloud-amd64. */
  uname: string;
}

export const UKI_SECTION_ORDER = ['.osrel', '.cmdline', '.uname', '.initrd', '.linux'] as const;
export type UkiSectionName = (typeof UKI_SECTION_ORDER)[number];

const DATA = SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ;
const CODE = SCN_CNT_CODE | SCN_MEM_READ;

function checkKernel(kernel: Uint8Array): void {
  try {
    parsePe(kernel);
  } catch (err) {
    throw new InputError('UKI: the kernel is not a PE image; it must be built with CONFIG_EFI_STUB (a bzImage is both)', { cause: err });
  }
}

export function buildUki(input: UkiInput): Uint8Array {
  if (input.kernel.length === 0) throw new InputError('UKI: the kernel is empty');
  checkKernel(input.kernel);
  const stub = parsePe(input.stub);
  if (!findSection(stub, '.sdmagic')) {
    throw new InputError('UKI: the stub has no .sdmagic section: it is not systemd-stub (linuxx64.efi.stub from systemd-boot-efi)');
  }
  const text = (s: string) => new TextEncoder().encode(s);
  const content: Record<UkiSectionName, Uint8Array> = {
    '.osrel': text(input.osRelease),
    '.cmdline': text(input.cmdline),
    '.uname': text(input.uname),
    '.initrd': input.initrd,
    '.linux': input.kernel,
  };
  const add: NewSection[] = UKI_SECTION_ORDER.filter((name) => content[name].length > 0).map((name) => ({
    name,
    data: content[name],
    characteristics: name === '.linux' ? CODE : DATA,
  }));
  try {
    return addPeSections(input.stub, add);
  } catch (err) {
    if (err instanceof PeFormatError) throw new InputError(`UKI: ${err.message}`, { cause: err });
    throw err;
  }
}

export interface UkiContents {
  osRelease?: string;
  cmdline?: string;
  uname?: string;
  initrd?: Uint8Array;
  linux?: Uint8Array;
}

/** Reads the UKI sections back (for tests and `ossify status`); absent sections are undefined. */
export function readUki(uki: Uint8Array): UkiContents {
  const h = parsePe(uki);
  const get = (name: UkiSectionName) => {
    const s = findSection(h, name);
    return s ? sectionData(uki, s) : undefined;
  };
  const str = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));
  const out: UkiContents = {};
  const osRelease = str(get('.osrel'));
  const cmdline = str(get('.cmdline'));
  const uname = str(get('.uname'));
  const initrd = get('.initrd');
  const linux = get('.linux');
  if (osRelease !== undefined) out.osRelease = osRelease;
  if (cmdline !== undefined) out.cmdline = cmdline;
  if (uname !== undefined) out.uname = uname;
  if (initrd !== undefined) out.initrd = initrd;
  if (linux !== undefined) out.linux = linux;
  return out;
}
