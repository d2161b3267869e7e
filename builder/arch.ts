import { InputError } from './util/errors.ts';

/**
 * Everything ossify knows per CPU architecture, in one place: every other module asks here
 * instead of spelling `x86_64`, `amd64`, `BOOTX64.EFI` or a root type GUID itself.
 * Architectures are named by `uname -m`; the other spellings (Debian's, OCI's, Node's) are
 * accepted wherever a user names one and normalised with `archInfo`.
 */

export interface QemuMachine {
  binary: string;
  /** The Debian package that provides `binary`. */
  package: string;
  machine: string;
  /** Under Secure Boot (x86: SMM guards the variable store). */
  secureBootMachine?: string;
  cpu?: string;
  /** UEFI firmware: code and a variable-store template, first existing pair wins. */
  firmware: readonly { code: string; vars: string }[];
  secureBootFirmware?: readonly { code: string; vars: string }[];
  firmwarePackage: string;
  /** Serial console device name in the guest. */
  console: string;
}

export interface ArchInfo {
  /** `uname -m`, and the name in profiles, build.json and release.json. */
  uname: string;
  /** Debian's architecture (`dpkg --print-architecture`, `apt-get download PKG:<deb>`). */
  deb: string;
  /** OCI image-spec platform architecture (and variant). */
  oci: { readonly architecture: string; readonly variant?: string };
  /** Node's `process.arch`. */
  node: string;
  /** UEFI file-name suffix: `BOOT<SUFFIX>.EFI`, `systemd-boot<suffix>.efi`, `linux<suffix>.efi.stub`. */
  efi: string;
  /** ELF e_machine. */
  elfMachine: number;
  /** PE/COFF Machine of its EFI binaries (systemd-boot, an EFI-stub kernel). */
  peMachine: number;
  /** Debian multiarch triplet: `lib/<triplet>` is where ld.so looks first. */
  multiarch: string;
  /** Root partition type GUID of the Discoverable Partitions Specification. */
  rootType: string;
  /** How `ossify run` boots it; absent for architectures ossify cannot boot. */
  qemu?: QemuMachine;
}

const OVMF = '/usr/share/OVMF';

export const ARCHES = {
  x86_64: {
    uname: 'x86_64',
    deb: 'amd64',
    oci: { architecture: 'amd64' },
    node: 'x64',
    efi: 'x64',
    elfMachine: 62,
    peMachine: 0x8664,
    multiarch: 'x86_64-linux-gnu',
    rootType: '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
    qemu: {
      binary: 'qemu-system-x86_64',
      package: 'qemu-system-x86',
      machine: 'q35',
      secureBootMachine: 'q35,smm=on',
      // Debian's `ovmf`: the 4 MiB flash builds, plain or with Secure Boot enforced.
      firmware: [
        { code: `${OVMF}/OVMF_CODE_4M.fd`, vars: `${OVMF}/OVMF_VARS_4M.fd` },
        { code: `${OVMF}/OVMF_CODE.fd`, vars: `${OVMF}/OVMF_VARS.fd` },
      ],
      secureBootFirmware: [{ code: `${OVMF}/OVMF_CODE_4M.secboot.fd`, vars: `${OVMF}/OVMF_VARS_4M.fd` }],
      firmwarePackage: 'ovmf',
      console: 'ttyS0',
    },
  },
  aarch64: {
    uname: 'aarch64',
    deb: 'arm64',
    oci: { architecture: 'arm64' },
    node: 'arm64',
    efi: 'aa64',
    elfMachine: 183,
    peMachine: 0xaa64,
    multiarch: 'aarch64-linux-gnu',
    rootType: 'B921B045-1DF0-41C3-AF44-4C6F280D3FAE',
    qemu: {
      binary: 'qemu-system-aarch64',
      package: 'qemu-system-arm',
      machine: 'virt',
      // Pointer authentication with QEMU's own cheap hash: the architected one (QARMA) is most
      // of the guest's time under TCG.
      cpu: 'max,pauth-impdef=on',
      // Debian's `qemu-efi-aarch64` (AAVMF): both files padded to the virt board's 64 MiB flash.
      firmware: [{ code: '/usr/share/AAVMF/AAVMF_CODE.fd', vars: '/usr/share/AAVMF/AAVMF_VARS.fd' }],
      firmwarePackage: 'qemu-efi-aarch64',
      console: 'ttyAMA0',
    },
  },
  riscv64: {
    uname: 'riscv64',
    deb: 'riscv64',
    oci: { architecture: 'riscv64' },
    node: 'riscv64',
    efi: 'riscv64',
    elfMachine: 243,
    peMachine: 0x5064,
    multiarch: 'riscv64-linux-gnu',
    rootType: '72EC70A6-CF74-40E6-BD49-4BDA08E8F224',
  },
  i686: {
    uname: 'i686',
    deb: 'i386',
    oci: { architecture: '386' },
    node: 'ia32',
    efi: 'ia32',
    elfMachine: 3,
    peMachine: 0x14c,
    multiarch: 'i386-linux-gnu',
    rootType: '44479540-F297-41B2-9AF7-D131D5F0458A',
  },
  armv7l: {
    uname: 'armv7l',
    deb: 'armhf',
    oci: { architecture: 'arm', variant: 'v7' },
    node: 'arm',
    efi: 'arm',
    elfMachine: 40,
    peMachine: 0x1c4,
    multiarch: 'arm-linux-gnueabihf',
    rootType: '69DAD710-2CE4-4E3C-B16C-21A1D49ABED3',
  },
} as const satisfies Record<string, ArchInfo>;

export type ArchName = keyof typeof ARCHES;

/** The architectures a profile can build (their boot is tested under QEMU). */
export const BUILD_ARCHES = ['x86_64', 'aarch64'] as const satisfies readonly ArchName[];
export type BuildArch = (typeof BUILD_ARCHES)[number];
/** A profile without `arch:` builds for this one. */
export const DEFAULT_ARCH: BuildArch = 'x86_64';

const ALL: ArchInfo[] = Object.values(ARCHES);

/** The table entry for any spelling of an architecture (`aarch64`, `arm64`, `x64`, …); undefined if unknown. */
export function findArch(name: string): ArchInfo | undefined {
  return ALL.find((a) => a.uname === name || a.deb === name || a.oci.architecture === name || a.node === name);
}

/** Like findArch, but an unknown name is an input error naming the known ones. */
export function archInfo(name: string): ArchInfo {
  const a = findArch(name);
  if (!a) throw new InputError(`unknown architecture ${JSON.stringify(name)}`, { hint: `one of ${ALL.map((x) => x.uname).join(', ')}` });
  return a;
}

/** `uname -m` for any spelling; an unknown name is returned as it is. */
export function normaliseArch(name: string): string {
  return findArch(name)?.uname ?? name;
}

/** The machine running ossify, by `uname -m`. */
export function hostArch(): string {
  return normaliseArch(process.arch);
}

export function archByElfMachine(machine: number): ArchInfo | undefined {
  return ALL.find((a) => a.elfMachine === machine);
}

export function archByPeMachine(machine: number): ArchInfo | undefined {
  return ALL.find((a) => a.peMachine === machine);
}

export function archByRootType(guid: string): ArchInfo | undefined {
  return ALL.find((a) => a.rootType === guid.toUpperCase());
}

/** UEFI file names of an architecture. */
export function efiNames(arch: string): { removable: string; systemdBoot: string; stub: string } {
  const s = archInfo(arch).efi;
  return { removable: `EFI/BOOT/BOOT${s.toUpperCase()}.EFI`, systemdBoot: `systemd-boot${s}.efi`, stub: `linux${s}.efi.stub` };
}

/** How `ossify run` boots an architecture, or an input error when it cannot. */
export function qemuFor(arch: string): QemuMachine {
  const a = archInfo(arch);
  if (!a.qemu) throw new InputError(`ossify run cannot boot ${a.uname} disks`, { hint: `it boots ${ALL.filter((x) => x.qemu).map((x) => x.uname).join(' and ')}` });
  return a.qemu;
}
