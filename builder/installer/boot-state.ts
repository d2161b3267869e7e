import { extraArguments, parseEntryFileName, parseUkiFileName, slotDir, SLOTS, UKI_DIR, ENTRY_SORT_KEY, type EntryState, type Slot } from '../boot/entries.ts';
import { readUki } from '../boot/uki.ts';
import { RELEASE_JSON, ROOTFS } from '../release/artifacts.ts';
import { parseRelease } from '../release/release-json.ts';
import type { FatEditor } from '../formats/fat/mutate.ts';

/**
 * What the ESP says about the two slots: each slot's loader entry (and its boot-counting
 * state, in every form systemd-boot and the blessing init leave it), the release metadata
 * recorded next to its kernel, and the order systemd-boot 252 will try them in.
 *
 * Entries come in two forms (profile `boot.entries`): Type #1 files
 * `loader/entries/ossify-<slot>[+L[-D]].conf`, and Type #2 unified kernel images
 * `EFI/Linux/ossify-<generation>-<slot>[+L[-D]].efi`, whose title and command line are read
 * from their .osrel and .cmdline sections (see builder/boot/entries.ts for how they sort).
 */

export const ENTRIES_DIR = 'loader/entries';
/** Suffix of every file the installer writes before renaming it into place. */
export const TEMP_SUFFIX = '.ossify-tmp';

export interface SlotEntry {
  /** File name (in loader/entries/ or EFI/Linux/). */
  file: string;
  /** Where it is on the ESP. */
  path: string;
  kind: 'type1' | 'uki';
  counting: EntryState;
  title: string | undefined;
  /** The `version` line: `<generation>-<release version>`. */
  version: string | undefined;
  generation: number;
  sortKey: string | undefined;
  options: string | undefined;
  /** Kernel arguments other than the ones naming the slot. */
  extraCmdline: string;
  text: string;
}

export interface SlotRecord {
  name: string;
  version: string;
  arch?: string;
  profileDigest?: string;
  /** The dm-verity root hash release.json pins, if the release has one. */
  roothash?: string;
  /** sha256 of the root image, when the ESP records it. */
  rootfsSha256?: string;
  rootfsSize?: number;
  /** The installer image it came from, when installed from one. */
  image?: string;
  /** Where this came from: the slot's release.json, or only the entry's title. */
  source: typeof RELEASE_JSON | 'entry-title';
}

export interface SlotState {
  slot: Slot;
  entries: SlotEntry[];
  /** The entry systemd-boot would pick for this slot (the first in boot order). */
  entry: SlotEntry | undefined;
  record: SlotRecord | undefined;
}

export interface BootState {
  slots: Record<Slot, SlotState>;
  /** Every ossify entry, in the order systemd-boot sorts them. */
  order: SlotEntry[];
  /** The slot systemd-boot boots next (its first entry), if any. */
  next: Slot | undefined;
  maxGeneration: number;
  /** Leftovers of an interrupted install/upgrade (temporary files). */
  leftovers: string[];
}

export function parseEntryConf(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^\s*([a-z-]+)\s+(.*?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith('#') && !out.has(m[1]!)) out.set(m[1]!, m[2]!);
  }
  return out;
}

/** Kernel arguments other than the ones ossify writes for the slot (slot, root, verity). */
export function extraCmdline(options: string | undefined): string {
  return extraArguments(options ?? '');
}

export function generationOf(version: string | undefined): number {
  const m = /^(\d+)(?:-|$)/.exec(version ?? '');
  return m ? Number(m[1]) : 0;
}

/**
 * systemd's strverscmp_improved, reduced to what entry versions contain: digit runs compare
 * as numbers, `~` sorts before anything (even the end), letters after separators.
 */
export function compareVersions(a: string, b: string): number {
  let i = 0;
  let j = 0;
  for (;;) {
    // Skip separators that are not meaningful in either string.
    while (i < a.length && !/[A-Za-z0-9~^]/.test(a[i]!)) i++;
    while (j < b.length && !/[A-Za-z0-9~^]/.test(b[j]!)) j++;
    const ca = a[i];
    const cb = b[j];
    if (ca === '~' || cb === '~') {
      if (ca !== '~') return 1;
      if (cb !== '~') return -1;
      i++;
      j++;
      continue;
    }
    if (ca === undefined || cb === undefined) return ca === undefined ? (cb === undefined ? 0 : -1) : 1;
    const da = /[0-9]/.test(ca);
    const db = /[0-9]/.test(cb);
    if (da !== db) return da ? 1 : -1;
    const run = (s: string, k: number, digits: boolean) => {
      let e = k;
      while (e < s.length && (digits ? /[0-9]/ : /[A-Za-z^]/).test(s[e]!)) e++;
      return e;
    };
    const ea = run(a, i, da);
    const eb = run(b, j, db);
    const sa = a.slice(i, ea);
    const sb = b.slice(j, eb);
    if (da) {
      const na = BigInt(sa);
      const nb = BigInt(sb);
      if (na !== nb) return na < nb ? -1 : 1;
    } else if (sa !== sb) {
      return sa < sb ? -1 : 1;
    }
    i = ea;
    j = eb;
  }
}

const triesLeft = (e: SlotEntry) => (e.counting.state === 'good' ? Infinity : e.counting.state === 'bad' ? 0 : e.counting.left);
const triesDone = (e: SlotEntry) => (e.counting.state === 'good' ? 0 : e.counting.done);
/** The entry id systemd-boot compares: the file name without the counter. */
const entryId = (e: SlotEntry) => e.file.toLowerCase().replace(/\+\d+(-\d+)?(\.conf|\.efi)$/, '$2');

/** systemd-boot 252's boot_entry_compare for entries that all carry a sort-key and no machine-id. */
export function compareEntries(a: SlotEntry, b: SlotEntry): number {
  const badA = triesLeft(a) === 0 ? 1 : 0;
  const badB = triesLeft(b) === 0 ? 1 : 0;
  if (badA !== badB) return badA - badB;
  const ka = a.sortKey;
  const kb = b.sortKey;
  if ((ka === undefined) !== (kb === undefined)) return ka === undefined ? 1 : -1;
  if (ka !== undefined && kb !== undefined) {
    if (ka !== kb) return ka < kb ? -1 : 1;
    const v = -compareVersions(a.version ?? '', b.version ?? '');
    if (v !== 0) return v;
  }
  const id = -compareVersions(entryId(a), entryId(b));
  if (id !== 0) return id;
  if (a.counting.state === 'good' || b.counting.state === 'good') return 0;
  if (triesLeft(a) !== triesLeft(b)) return triesLeft(b) - triesLeft(a);
  return triesDone(a) - triesDone(b);
}

async function readSlotRecord(esp: FatEditor, slot: Slot): Promise<SlotRecord | undefined> {
  const path = `${slotDir(slot)}/${RELEASE_JSON}`;
  if (!(await esp.stat(path))) return undefined;
  try {
    // The release's own release.json, plus the image it was pulled from (upgrade's slotReleaseJson).
    const r = parseRelease(Buffer.from(await esp.readFile(path)).toString('utf8'), path);
    const root = r.artifacts[ROOTFS];
    return {
      name: r.name,
      version: r.version,
      arch: r.arch,
      profileDigest: r.profileDigest,
      ...(r.roothash !== undefined ? { roothash: r.roothash.replace(/^sha256:/, '') } : {}),
      ...(root ? { rootfsSha256: root.sha256, rootfsSize: root.size } : {}),
      ...(typeof r.image === 'string' ? { image: r.image } : {}),
      source: RELEASE_JSON,
    };
  } catch {
    return undefined;
  }
}

/** `title <name> <version> (slot x)`, as entryConf writes it. */
function recordFromTitle(title: string | undefined): SlotRecord | undefined {
  const m = /^(\S+) (\S+) \(slot [ab]\)$/.exec(title ?? '');
  return m ? { name: m[1]!, version: m[2]!, source: 'entry-title' } : undefined;
}

export async function readBootState(esp: FatEditor): Promise<BootState> {
  const leftovers: string[] = [];
  const entries: SlotEntry[] = [];
  const files = (await esp.stat(ENTRIES_DIR)) ? await esp.list(ENTRIES_DIR) : [];
  for (const f of files) {
    if (f.isDir) continue;
    if (f.name.endsWith(TEMP_SUFFIX)) {
      leftovers.push(f.path);
      continue;
    }
    const parsed = parseEntryFileName(f.name);
    if (!parsed) continue;
    const text = Buffer.from(await esp.readFile(f.path)).toString('utf8');
    const conf = parseEntryConf(text);
    entries.push({
      file: f.name,
      path: f.path,
      kind: 'type1',
      counting: parsed.counting,
      title: conf.get('title'),
      version: conf.get('version'),
      generation: generationOf(conf.get('version')),
      sortKey: conf.get('sort-key'),
      options: conf.get('options'),
      extraCmdline: extraCmdline(conf.get('options')),
      text,
    });
  }
  for (const f of (await esp.stat(UKI_DIR)) ? await esp.list(UKI_DIR) : []) {
    if (f.isDir) continue;
    if (f.name.endsWith(TEMP_SUFFIX)) {
      leftovers.push(f.path);
      continue;
    }
    const parsed = parseUkiFileName(f.name);
    if (!parsed) continue;
    // Title and command line from the UKI itself (systemd-boot shows PRETTY_NAME; the cmdline is signed in).
    let title: string | undefined;
    let options: string | undefined;
    try {
      const u = readUki(await esp.readFile(f.path));
      title = u.osRelease ? osReleaseField(u.osRelease, 'PRETTY_NAME') : undefined;
      options = u.cmdline?.replace(/\n$/, '');
    } catch {
      /* not a PE: systemd-boot skips it too, but it still counts as the slot's entry here */
    }
    entries.push({
      file: f.name,
      path: f.path,
      kind: 'uki',
      counting: parsed.counting,
      title,
      version: undefined,
      generation: parsed.generation,
      sortKey: ENTRY_SORT_KEY,
      options,
      extraCmdline: extraCmdline(options),
      text: '',
    });
  }
  for (const slot of SLOTS) {
    if (!(await esp.stat(slotDir(slot)))) continue;
    for (const f of await esp.list(slotDir(slot))) if (f.name.endsWith(TEMP_SUFFIX)) leftovers.push(f.path);
  }
  const order = [...entries].sort(compareEntries);
  const slotOf = (e: SlotEntry) => entrySlot(e);
  const slots = {} as Record<Slot, SlotState>;
  for (const slot of SLOTS) {
    const mine = order.filter((e) => slotOf(e) === slot);
    const entry = mine[0];
    slots[slot] = { slot, entries: mine, entry, record: (await readSlotRecord(esp, slot)) ?? (entry ? recordFromTitle(entry.title) : undefined) };
  }
  return {
    slots,
    order,
    next: order[0] ? slotOf(order[0]) : undefined,
    maxGeneration: entries.reduce((m, e) => Math.max(m, e.generation), 0),
    leftovers,
  };
}

export function entrySlot(e: Pick<SlotEntry, 'file' | 'kind'>): Slot {
  return (e.kind === 'uki' ? parseUkiFileName(e.file) : parseEntryFileName(e.file))!.slot;
}

/** One os-release value, unquoted (the .osrel of a UKI). */
export function osReleaseField(text: string, key: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m && m[1] === key) {
      const v = m[2]!;
      if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) {
        try {
          return JSON.parse(v) as string;
        } catch {
          return v.slice(1, -1);
        }
      }
      return v;
    }
  }
  return undefined;
}

export function otherSlot(slot: Slot): Slot {
  return slot === 'a' ? 'b' : 'a';
}

export function describeCounting(c: EntryState): string {
  if (c.state === 'good') return 'good';
  if (c.state === 'bad') return `bad (failed ${c.done} tries)`;
  return `trying (${c.left} ${c.left === 1 ? 'try' : 'tries'} left${c.done ? `, ${c.done} done` : ''})`;
}
