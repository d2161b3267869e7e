import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { bootLoaderPaths, LOADER_CONF_PATH, SECURE_BOOT_KEYS_DIR } from '../boot/esp.ts';
import { AUTH_NAMES, authArtifact, BOOT_ARTIFACTS, bootLoaderArtifact, LOADER_CONF_ARTIFACT, ukiArtifact } from '../release/artifacts.ts';
import { parseAuthVariable, peSigners, signatureListCertificates, type PeSigner } from '../boot/secureboot/index.ts';
import type { FatEditor } from '../formats/fat/mutate.ts';
import { InputError, OssifyError } from '../util/errors.ts';
import { parseEntryConf, TEMP_SUFFIX, type SlotEntry } from './boot-state.ts';
import { putFileAtomic } from './esp.ts';
import type { ReleaseSource } from './release.ts';

/**
 * The ESP's shared boot files as a release carries them (build artifacts, installer payload
 * files: BOOT_ARTIFACTS in builder/release/artifacts.ts) and as `upgrade` brings a disk's up to date:
 * systemd-boot (EFI/BOOT/BOOTX64.EFI and EFI/systemd/systemd-bootx64.efi on x86-64), loader.conf and the
 * Secure Boot keys systemd-boot enrols (loader/keys/auto/{PK,KEK,db}.auth).
 *
 * Unlike a slot's files these are shared by both slots, so an upgrade cannot keep the old ones
 * as a fallback. What it does instead:
 *
 * - **Never an unbootable ESP.** Each file is replaced whole: new clusters written, read back
 *   and compared, then one directory-sector write points the name at them (FatEditor
 *   replaceFile with verify). A kill leaves each file old or new, never torn; leaked clusters
 *   are reclaimed by the next run's clean-esp.
 * - **Order.** Boot loaders first, then the keys, loader.conf last. systemd-boot enrols only
 *   when loader.conf asks and all three .auth files read, and only after the new (signed) boot
 *   loader is in place, so no kill point lets an old boot loader enrol keys that would then
 *   refuse it.
 * - **A firmware that enforces Secure Boot must still start it.** Refused before anything is
 *   written: a signed boot loader replaced by one that no signer of the old one signed (a
 *   firmware that trusts the old key refuses the new one: nothing boots), and, on a disk whose
 *   boot loader is unsigned, keys to enrol whose db does not sign the running slot's UKI (after
 *   enrolment the fallback slot would be refused).
 * - The disk keeps its own loader.conf `timeout` (set at install, e.g. `--timeout`); every
 *   other line is the release's.
 */

export type EnrollMode = 'force' | 'manual' | 'off';

export interface ReleaseBootFiles {
  /** The release's architecture, which names systemd-boot's files. */
  arch: string;
  systemdBoot: Uint8Array;
  loaderConf: string;
  timeout: number | undefined;
  /** loader.conf's secure-boot-enroll. */
  enroll: EnrollMode | undefined;
  /** The keys systemd-boot enrols; all three or none. */
  auth: Record<(typeof AUTH_NAMES)[number], Uint8Array> | undefined;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const hexOf = (s: string) => s.replace(/^sha256:/, '');

/** The release's shared boot files, checked against release.json; undefined for a release made before they were carried. */
export async function releaseBootFiles(src: ReleaseSource): Promise<ReleaseBootFiles | undefined> {
  const a = src.release.artifacts;
  const what = `${src.release.name} ${src.release.version}`;
  const loader = bootLoaderArtifact(src.release.arch);
  if (!a[loader]) {
    const stray = BOOT_ARTIFACTS.find((n) => a[n] !== undefined);
    if (stray) throw new InputError(`${what} (${src.release.arch}) ships ${stray} but no ${loader}`, { hint: 'rebuild the release with ossify build' });
    return undefined;
  }
  if (!a[LOADER_CONF_ARTIFACT]) throw new InputError(`${what} ships ${loader} but no ${LOADER_CONF_ARTIFACT}`, { hint: 'rebuild the release with ossify build' });
  const keys = AUTH_NAMES.filter((k) => a[authArtifact(k)] !== undefined);
  if (keys.length !== 0 && keys.length !== AUTH_NAMES.length) {
    throw new InputError(`${what} ships ${keys.map(authArtifact).join(', ')} but not all of ${AUTH_NAMES.map(authArtifact).join(', ')}`, { hint: 'rebuild the release with ossify build' });
  }
  const read = async (name: string) => {
    const bytes = await readFile(src.path(name));
    // Checked by verifyRelease already; checked again here, where the bytes are taken.
    if (sha(bytes) !== hexOf(a[name]!.sha256)) throw new InputError(`${src.dir}/${name} does not match its sha256 in the release: digest mismatch`);
    return new Uint8Array(bytes);
  };
  const loaderConf = Buffer.from(await read(LOADER_CONF_ARTIFACT)).toString('utf8');
  const conf = parseEntryConf(loaderConf);
  const timeout = Number(conf.get('timeout') ?? NaN);
  const e = conf.get('secure-boot-enroll');
  const auth = keys.length ? { PK: await read('PK.auth'), KEK: await read('KEK.auth'), db: await read('db.auth') } : undefined;
  return {
    arch: src.release.arch,
    systemdBoot: await read(loader),
    loaderConf,
    timeout: Number.isFinite(timeout) ? timeout : undefined,
    enroll: e === 'force' || e === 'manual' || e === 'off' ? e : undefined,
    auth,
  };
}

/** Whether systemd-boot will enrol the release's keys (on a firmware in setup mode). */
export function enrolsKeys(rel: ReleaseBootFiles): boolean {
  return rel.auth !== undefined && (rel.enroll === 'force' || rel.enroll === 'manual');
}

/** The db certificates (sha256 fingerprints) the release's db.auth enrols. */
function dbFingerprints(rel: ReleaseBootFiles): string[] {
  if (!rel.auth) return [];
  try {
    return signatureListCertificates(parseAuthVariable(rel.auth.db).data).map(sha);
  } catch (err) {
    throw new InputError(`the release's db.auth is not an authenticated EFI variable: ${(err as Error).message}`, { cause: err });
  }
}

const valid = (s: PeSigner[]) => s.filter((x) => x.valid);
const names = (s: PeSigner[]) => [...new Set(s.map((x) => x.subject))].join('; ') || 'nobody';

/**
 * A warning for an install whose boot loader a firmware enforcing Secure Boot would refuse
 * although the release's UKIs are signed for it (a release from an image made before the
 * payload carried its boot loader, or `--systemd-boot` with an unsigned file).
 */
export async function secureBootGap(src: ReleaseSource, systemdBoot: Uint8Array, uki: boolean): Promise<string | undefined> {
  if (!uki || valid(peSigners(systemdBoot)).length > 0) return undefined;
  const signed = valid(peSigners(await readFile(src.path(ukiArtifact('a')))));
  if (signed.length === 0) return undefined;
  return `the release's UKIs are signed for Secure Boot (by ${names(signed)}), but the disk gets an unsigned systemd-boot and no keys to enrol: a firmware that enforces Secure Boot refuses to start it${(await releaseBootFiles(src)) ? '' : ' (the release carries no boot loader: an installer image made by an older ossify; rebuild and push it)'}`;
}

type Change = { kind: 'put'; path: string; data: Uint8Array; replace: boolean } | { kind: 'remove'; path: string };

export interface BootFilesPlan {
  /** In the order they must be made (see above). */
  changes: Change[];
  /** Bytes of clusters the new files take while the old ones still hold theirs. */
  need: number;
}

/** The disk's loader.conf timeout when it is a plain value, else undefined. */
function diskTimeout(text: string | undefined): string | undefined {
  // The first line sed -n 's/^timeout \([A-Za-z0-9-][A-Za-z0-9-]*\)[[:space:]]*$/\1/p' prints.
  return /^timeout ([A-Za-z0-9-]+)[ \t]*$/m.exec(text ?? '')?.[1];
}

/** The release's loader.conf with the disk's timeout (what the on-device script's sed makes too). */
export function mergedLoaderConf(release: string, disk: string | undefined): string {
  const t = diskTimeout(disk);
  return t === undefined ? release : release.replace(/^timeout .*$/gm, `timeout ${t}`);
}

/**
 * What an upgrade changes of the shared boot files, or an InputError when the change could
 * leave a firmware that enforces Secure Boot with nothing it will start (see above).
 */
export async function planBootFiles(esp: FatEditor, rel: ReleaseBootFiles, opts: { active: SlotEntry | undefined; release: string }): Promise<BootFilesPlan> {
  const read = async (path: string) => ((await esp.stat(path)) ? esp.readFile(path) : undefined);
  const loaderPaths = bootLoaderPaths(rel.arch);
  const current = await read(loaderPaths[0]);
  const oldSigners = current ? valid(peSigners(current)) : [];
  const newSigners = valid(peSigners(rel.systemdBoot));
  const hint = 'build the release with this disk\'s Secure Boot keys (boot.secureBoot.keys), or install it on a new disk with ossify install';
  if (oldSigners.length > 0 && !newSigners.some((n) => oldSigners.some((o) => o.fingerprint === n.fingerprint))) {
    throw new InputError(
      `this disk's boot loader is signed for Secure Boot by ${names(oldSigners)}, but ${opts.release}'s is ${newSigners.length ? `signed by ${names(newSigners)}` : 'not signed'}: a firmware that enforces Secure Boot with this disk's keys would refuse to start it, and neither slot would boot`,
      { hint },
    );
  }
  if (oldSigners.length === 0 && enrolsKeys(rel) && opts.active) {
    const db = dbFingerprints(rel);
    const activeSigners = opts.active.kind === 'uki' ? valid(peSigners((await read(opts.active.path)) ?? new Uint8Array())) : [];
    if (!activeSigners.some((s) => db.includes(s.fingerprint))) {
      throw new InputError(
        `${opts.release} has systemd-boot enrol Secure Boot keys (loader/keys/auto), but ${opts.active.file}, the entry that boots now, is ${activeSigners.length ? `signed by ${names(activeSigners)}` : 'not signed'}, not by the db key it enrols: once the firmware enrols them it would refuse that slot, the one to fall back to`,
        { hint },
      );
    }
  }

  const changes: Change[] = [];
  const put = async (path: string, data: Uint8Array) => {
    const have = await read(path);
    if (have && sha(have) === sha(data)) return;
    changes.push({ kind: 'put', path, data, replace: have !== undefined });
  };
  // Leftovers of an interrupted run that wrote one of these under its temporary name.
  for (const p of [...loaderPaths, ...AUTH_NAMES.map((k) => `${SECURE_BOOT_KEYS_DIR}/${authArtifact(k)}`), LOADER_CONF_PATH]) {
    if (await esp.stat(`${p}${TEMP_SUFFIX}`)) changes.push({ kind: 'remove', path: `${p}${TEMP_SUFFIX}` });
  }
  for (const p of loaderPaths) await put(p, rel.systemdBoot);
  for (const k of AUTH_NAMES) {
    const path = `${SECURE_BOOT_KEYS_DIR}/${authArtifact(k)}`;
    if (rel.auth) await put(path, rel.auth[k]);
    else if (await esp.stat(path)) changes.push({ kind: 'remove', path });
  }
  const conf = await read(LOADER_CONF_PATH);
  await put(LOADER_CONF_PATH, Buffer.from(mergedLoaderConf(rel.loaderConf, conf ? Buffer.from(conf).toString('utf8') : undefined)));
  const need = changes.reduce((n, c) => n + (c.kind === 'put' ? esp.allocationFor(c.data.length) : 0), 0);
  return { changes, need };
}

/** Makes the planned changes in order; returns a line per change. */
export async function writeBootFiles(esp: FatEditor, plan: BootFilesPlan, mtime: number): Promise<string[]> {
  const done: string[] = [];
  for (const c of plan.changes) {
    if (c.kind === 'remove') {
      await esp.remove(c.path);
      done.push(`removed ${c.path}`);
    } else if (c.replace) {
      await esp.replaceFile(c.path, c.data, { mtime, verify: true });
      const back = await esp.readFile(c.path);
      if (sha(back) !== sha(c.data)) throw new OssifyError(`the ESP returned different bytes for ${c.path} than were written: the medium is failing`);
      done.push(`replaced ${c.path} (${c.data.length} bytes)`);
    } else {
      await esp.mkdirp(c.path.slice(0, c.path.lastIndexOf('/')), { mtime });
      await putFileAtomic(esp, c.path, c.data, mtime);
      done.push(`wrote ${c.path} (${c.data.length} bytes)`);
    }
  }
  return done;
}
