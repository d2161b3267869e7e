/**
 * Boot Loader Specification Type #1 entries for the A/B slots, and the boot-counting file
 * names systemd-boot understands (`ossify-b+3.conf` → `ossify-b+2-1.conf` → … → `+0-3`).
 *
 * Ordering: every entry carries the same `sort-key`, so systemd-boot orders them by
 * `version`, newest first, and boots the first one that still has tries left (an entry
 * with `+0-N` sorts last). The `version` therefore starts with a *generation* number the
 * installer increments on every upgrade or rollback; the release version follows it for
 * humans reading the menu.
 */
export type Slot = 'a' | 'b';
export const SLOTS: readonly Slot[] = ['a', 'b'];

export const ENTRY_SORT_KEY = 'ossify';

export function rootLabel(slot: Slot): string {
  return `ROOT-${slot.toUpperCase()}`;
}

export interface EntrySpec {
  slot: Slot;
  generation: number;
  name: string;
  version: string;
  /** Extra kernel arguments from the profile. */
  cmdline: string;
  /** dm-verity parameters of the slot's root, when it has a hash tree. */
  verity?: SlotVerity;
}

export function slotDir(slot: Slot): string {
  return `ossify/${slot}`;
}

/**
 * What the initramfs needs to map a slot with dm-verity (see builder/initramfs/init-script.ts);
 * the same numbers build.json records under `verity`.
 */
export interface SlotVerity {
  /** 64 hex digits. */
  rootHash: string;
  /** Hex, or '' for none. */
  salt: string;
  /** Data blocks of 4096 bytes (the squashfs, zero-padded). */
  dataBlocks: number;
  /** Bytes from the start of the root partition to the verity superblock. */
  hashOffset: number;
}

export function verityCmdline(v: SlotVerity): string {
  return [`ossify.verity=${v.rootHash}`, `ossify.verity.salt=${v.salt === '' ? '-' : v.salt}`, `ossify.verity.blocks=${v.dataBlocks}`, `ossify.verity.hashoffset=${v.hashOffset}`].join(' ');
}

/** The kernel arguments ossify writes for a slot itself (as opposed to the profile's extra ones). */
export function isSlotArgument(word: string): boolean {
  return /^ossify\.(slot|root|verity|verity\.[a-z]+)=/.test(word);
}

/** Reads the verity arguments back from a command line; undefined when it has none. */
export function parseVerityCmdline(cmdline: string): SlotVerity | undefined {
  const get = (k: string) => cmdline.split(/\s+/).find((w) => w.startsWith(`${k}=`))?.slice(k.length + 1);
  const rootHash = get('ossify.verity');
  if (rootHash === undefined) return undefined;
  const salt = get('ossify.verity.salt') ?? '';
  return { rootHash, salt: salt === '-' ? '' : salt, dataBlocks: Number(get('ossify.verity.blocks')), hashOffset: Number(get('ossify.verity.hashoffset')) };
}

/** A command line's arguments besides the ones naming a slot, one space apart. */
export function extraArguments(cmdline: string): string {
  return cmdline
    .split(/\s+/)
    .filter((w) => w && !isSlotArgument(w))
    .join(' ');
}

export function kernelCmdline(slot: Slot, extra: string, verity?: SlotVerity): string {
  const own = extraArguments(extra);
  return [`ossify.slot=${slot}`, `ossify.root=${rootLabel(slot)}`, verity ? verityCmdline(verity) : '', own].filter(Boolean).join(' ');
}

export function entryConf(e: EntrySpec): string {
  return [
    `title ${e.name} ${e.version} (slot ${e.slot})`,
    `sort-key ${ENTRY_SORT_KEY}`,
    `version ${e.generation}-${e.version}`,
    `linux /${slotDir(e.slot)}/vmlinuz`,
    `initrd /${slotDir(e.slot)}/initrd.img`,
    `options ${kernelCmdline(e.slot, e.cmdline, e.verity)}`,
    '',
  ].join('\n');
}

/** `ossify-a.conf` for a blessed entry, `ossify-b+3.conf` for one still being tried. */
export function entryFileName(slot: Slot, tries?: { left: number; done?: number }): string {
  if (!tries) return `ossify-${slot}.conf`;
  const done = tries.done ? `-${tries.done}` : '';
  return `ossify-${slot}+${tries.left}${done}.conf`;
}

export type EntryState = { state: 'good' } | { state: 'trying'; left: number; done: number } | { state: 'bad'; done: number };

/** Parses an entry file name back into its slot and counting state; undefined for foreign files. */
export function parseEntryFileName(file: string): { slot: Slot; counting: EntryState } | undefined {
  const m = /^ossify-([ab])(?:\+(\d+)(?:-(\d+))?)?\.conf$/.exec(file);
  if (!m) return undefined;
  const slot = m[1] as Slot;
  if (m[2] === undefined) return { slot, counting: { state: 'good' } };
  const left = Number(m[2]);
  const done = m[3] === undefined ? 0 : Number(m[3]);
  return { slot, counting: left === 0 ? { state: 'bad', done } : { state: 'trying', left, done } };
}

export function loaderConf(opts: { timeout: number; secureBootEnroll?: 'force' | 'manual' | 'off' }): string {
  // No `default` line: the sort order above decides, so switching slots is one rename.
  return [
    `timeout ${opts.timeout}`,
    'editor no',
    'console-mode keep',
    'auto-entries no',
    'auto-firmware no',
    ...(opts.secureBootEnroll ? [`secure-boot-enroll ${opts.secureBootEnroll}`] : []),
    '',
  ].join('\n');
}

/**
 * Type #2 entries (unified kernel images in EFI/Linux/). systemd-boot 252 takes their sort key
 * from the UKI's .osrel (`IMAGE_ID`, else `ID`) and their version from `IMAGE_VERSION`,
 * `VERSION`, `VERSION_ID` or `BUILD_ID`, then orders by the file name (descending,
 * strverscmp_improved), after putting entries with no tries left last. A UKI is signed, so
 * nothing inside it can change when the installer assigns a generation: ossify's .osrel
 * carries `ID=ossify` (the same sort key as the Type #1 entries) and *no* version field, so
 * the file name decides, and the file name starts with the generation:
 *
 *   EFI/Linux/ossify-<generation>-<slot>[+LEFT[-DONE]].efi
 *
 * The newest generation sorts first; a rollback renames the other slot's file to a new
 * generation (one directory-entry write); boot counting works on the `+LEFT-DONE` suffix as
 * for Type #1. The release version is shown in the menu through PRETTY_NAME.
 */
export const UKI_DIR = 'EFI/Linux';

export function ukiFileName(slot: Slot, generation: number, tries?: { left: number; done?: number }): string {
  const counter = tries ? `+${tries.left}${tries.done ? `-${tries.done}` : ''}` : '';
  return `ossify-${generation}-${slot}${counter}.efi`;
}

export function parseUkiFileName(file: string): { slot: Slot; generation: number; counting: EntryState } | undefined {
  const m = /^ossify-(\d+)-([ab])(?:\+(\d+)(?:-(\d+))?)?\.efi$/i.exec(file);
  if (!m) return undefined;
  const slot = m[2]!.toLowerCase() as Slot;
  const generation = Number(m[1]);
  if (m[3] === undefined) return { slot, generation, counting: { state: 'good' } };
  const left = Number(m[3]);
  const done = m[4] === undefined ? 0 : Number(m[4]);
  return { slot, generation, counting: left === 0 ? { state: 'bad', done } : { state: 'trying', left, done } };
}

/** The UKI's .osrel: what systemd-boot shows and sorts by (see above), never a version field. */
export function ukiOsRelease(o: { name: string; version: string; slot: Slot }): string {
  return [`ID=${ENTRY_SORT_KEY}`, `NAME=${JSON.stringify(o.name)}`, `PRETTY_NAME=${JSON.stringify(`${o.name} ${o.version} (slot ${o.slot})`)}`, ''].join('\n');
}
