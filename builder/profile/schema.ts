import { z } from 'zod';
import { OUTPUT_NAMES, OutputSpec } from '../outputs/index.ts';
import { BUILD_ARCHES, DEFAULT_ARCH } from '../arch.ts';
import { MiB, VAR_STATE_MIN } from '../disk/layout.ts';

/**
 * The profile schema: the single source of truth for what a profile may say. The JSON Schema
 * in profiles/schema.json is generated from it (`ossify schema`), and a test fails when stale.
 */

const size = z
  .union([z.number().int().positive(), z.string().regex(/^\d+(\.\d+)?\s*(B|K|KiB|M|MiB|G|GiB|T|TiB)?$/i)])
  .describe('A size in bytes, or with a unit: 512MiB, 2G (binary units).');

/**
 * What an input may carry into an image beyond plain files. Absent keys take the defaults
 * below (kept out of the parsed profile so existing profiles keep their digest).
 */
export const InputAllow = z
  .strictObject({
    devices: z.boolean().optional().describe('Keep character and block device nodes (default false: dropped; /dev is devtmpfs at run time).'),
    xattrs: z.boolean().optional().describe('Keep extended attributes such as security.capability (default false: stripped).'),
    setuid: z
      .boolean()
      .optional()
      .describe(
        'Keep setuid/setgid bits (default true, because packages such as util-linux and login need them and the image is read-only). Even when true, a setuid bit on a file not owned by uid 0 (setgid: gid 0) is dropped, since rootfs.allRoot would otherwise turn it into a setuid-root file.',
      ),
  })
  .describe('Special files and bits this input may carry into the image.');
export type InputAllow = z.infer<typeof InputAllow>;

const inputCommon = {
  include: z.array(z.string()).optional().describe('Globs of paths to keep from this input (default: all).'),
  exclude: z.array(z.string()).optional().describe('Globs of paths to drop from this input.'),
  target: z.string().optional().describe('Subdirectory of the tree to place this input under.'),
  allow: InputAllow.optional(),
};

/**
 * The latest timestamp every output format can hold: squashfs and cpio (newc) store mtimes
 * as unsigned 32-bit seconds, so a later epoch could not be written faithfully.
 */
export const MAX_EPOCH = 0xffffffff;

export const DebInput = z
  .strictObject({
    deb: z
      .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
      .describe('Debian package(s) by name (fetched with apt-get download, verified by sha256), or path(s) to .deb files.'),
    depends: z
      .union([z.boolean(), z.array(z.string())])
      .default(false)
      .describe('Also unpack dependencies: true for all (recursively), or globs of package names to follow (e.g. "linux-image-*" to get the real kernel behind a metapackage).'),
    ...inputCommon,
  })
  .describe('A Debian package.');

export const DirInput = z
  .strictObject({ dir: z.string().min(1).describe('A directory, relative to the profile file.'), ...inputCommon })
  .describe('A local directory tree.');

export const TarInput = z
  .strictObject({ tar: z.string().min(1).describe('A tar archive (.tar, .tar.gz, .tar.zst, .tar.xz), relative to the profile file.'), ...inputCommon })
  .describe('A tar archive.');

export const OciInput = z
  .strictObject({
    oci: z
      .string()
      .min(1)
      .describe('An image reference, REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]; its layers are applied in order, whiteouts included.'),
    platform: z
      .string()
      .regex(/^[a-z0-9]+\/[a-z0-9]+(\/[a-z0-9]+)?$/, 'os/architecture[/variant], e.g. linux/amd64')
      .optional()
      .describe('Which image of a multi-platform index to use (default: linux and the profile\'s arch).'),
    insecure: z.boolean().optional().describe('Plain HTTP; only allowed for a registry on this machine (127.0.0.1, localhost).'),
    caFile: z.string().min(1).optional().describe('PEM file of the CA that signed the registry\'s certificate, relative to the profile file.'),
    ...inputCommon,
  })
  .describe('An OCI image from a registry.');

const octalMode = z
  .string()
  .regex(/^0?[0-7]{3,4}$/, 'an octal mode in quotes, such as "0644" or "4755"')
  .describe('Permission bits as an octal string ("0644"); a string because YAML reads 0644 as the decimal number 644.');
const owner = z.string().regex(/^\d+:\d+$/, 'UID:GID, numeric, such as "0:0"').describe('Numeric "UID:GID" (default "0:0").');
const fileItem = { path: z.string().min(1).describe('Where the entry goes in the tree.'), owner: owner.optional() };

export const FileItem = z.union([
  z.strictObject({ ...fileItem, content: z.string().describe('The file\'s text.'), mode: octalMode.optional() }).describe('A file with inline content (mode "0644" by default).'),
  z
    .strictObject({ ...fileItem, source: z.string().min(1).describe('A host file, relative to the profile file.'), mode: octalMode.optional() })
    .describe('A copy of a host file (mode "0755" if the host file is executable, else "0644", unless given).'),
  z.strictObject({ ...fileItem, symlink: z.string().min(1).describe('The link target, kept verbatim.') }).describe('A symbolic link.'),
  z.strictObject({ ...fileItem, directory: z.literal(true), mode: octalMode.optional() }).describe('A directory (mode "0755" by default).'),
]);
export type FileItem = z.infer<typeof FileItem>;

export const FilesInput = z
  .strictObject({ files: z.array(FileItem).min(1).describe('Entries written straight from the profile, in order.'), ...inputCommon })
  .describe('Files, links and directories given inline.');

export const Input = z.union([DebInput, DirInput, TarInput, OciInput, FilesInput]);
export type Input = z.infer<typeof Input>;

export const Program = z
  .strictObject({
    path: z.string().min(1).describe('The program inside `from`, e.g. usr/sbin/veritysetup.'),
    from: Input.describe('The tree holding the program and its shared libraries (their closure is resolved inside it).'),
  })
  .describe('A dynamically linked program, copied with its shared-library closure (DT_NEEDED, the interpreter).');
export type Program = z.infer<typeof Program>;

export const SquashfsSettings = z.strictObject({
  compression: z.enum(['gzip', 'zstd', 'xz', 'none']).default('zstd'),
  level: z.number().int().min(1).max(22).optional().describe('Compressor level (gzip 1-9, zstd 1-22, xz 0-9).'),
  blockSize: z
    .number()
    .int()
    .min(4096)
    .max(1048576)
    .refine((n) => (n & (n - 1)) === 0, 'a power of two (4096, 8192, … 1048576)')
    .default(131072).describe('Block size in bytes, a power of two from 4 KiB to 1 MiB.'),
});

export const SecureBootSettings = z
  .strictObject({
    keys: z
      .string()
      .min(1)
      .describe(
        'Directory, relative to the profile file, with PK.key/PK.crt, KEK.key/KEK.crt and db.key/db.crt, as `ossify keygen --secure-boot DIR` writes them. ossify never generates keys during a build.',
      ),
    signer: z
      .enum(['ossify', 'sbsign'])
      .optional()
      .describe('Who makes the Authenticode signatures (default ossify: pure TypeScript, deterministic; sbsign: the sbsigntool program).'),
    enroll: z
      .enum(['force', 'manual', 'off'])
      .optional()
      .describe(
        'systemd-boot\'s secure-boot-enroll for the loader/keys/auto/*.auth files on the ESP (default force: enrol PK, KEK and db on the first boot of a machine whose firmware is in setup mode; manual: offer a menu entry; off: do not write the .auth files).',
      ),
  })
  .describe('Sign systemd-boot and the unified kernel images for UEFI Secure Boot (needs boot.entries: uki).');
export type SecureBootSettings = z.infer<typeof SecureBootSettings>;

// fleet: per-site data. Everything here goes into a small site seed (site.tar at the
// start of the STATE partition, its own layer in the installer image); the OS artifacts stay
// byte-identical across sites. See docs/fleet.md.
const ipv4Text = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)(?:\\.(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)){3}';
const ipv4 = z.string().regex(new RegExp(`^${ipv4Text}$`), 'an IPv4 address such as 192.0.2.1');
const ipAddress = z.string().regex(new RegExp(`^(?:${ipv4Text}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]+)$`), 'an IPv4 or IPv6 address');
const certName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-"')
  .describe('File name (without .pem) under /etc/ssl/certs/.');

export const SiteSettings = z
  .strictObject({
    name: z
      .string()
      .max(63)
      .regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit')
      .describe("The site's identifier: names its output directory (out/<name>-<version>-<site>/) and its seed."),
    hostname: z
      .string()
      .max(253)
      .regex(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/, 'a host name: dot-separated labels of letters, digits and "-"')
      .optional()
      .describe("/etc/hostname (and /etc/hosts) of the site's machines."),
    network: z
      .strictObject({
        interface: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'an interface name such as eth0').default('eth0'),
        dhcp: z.boolean().optional().describe('Configure the interface by DHCP (instead of address/gateway).'),
        address: z
          .string()
          .regex(new RegExp(`^${ipv4Text}/(?:3[0-2]|[12]?\\d)$`), 'an IPv4 address with its prefix length, such as 192.0.2.10/24')
          .optional()
          .describe('Static address with prefix length.'),
        gateway: ipv4.optional(),
        dns: z.array(ipAddress).optional().describe('Name servers for /etc/resolv.conf.'),
      })
      .optional()
      .describe('Written as /etc/network/interfaces (ifupdown syntax) and /etc/resolv.conf.'),
    certificates: z
      .array(
        z.union([
          z.strictObject({ name: certName, source: z.string().min(1).describe('A PEM file, relative to the profile file.') }),
          z.strictObject({ name: certName, content: z.string().min(1).describe('The PEM text.') }),
        ]),
      )
      .optional()
      .describe('PEM certificates for /etc/ssl/certs/<name>.pem.'),
    env: z
      .record(z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'an upper-case shell variable name'), z.string().regex(/^[^\n\0]*$/, 'a single line'))
      .optional()
      .describe('Extra KEY=value lines for /etc/ossify/site.env (SITE_NAME and SITE_HOSTNAME are always there).'),
    files: z.array(FileItem).optional().describe('Files, links and directories under etc/, as in a files: input.'),
    overlay: z.string().min(1).optional().describe('A directory, relative to the profile file, whose etc/ tree is laid over /etc.'),
  })
  .describe('Site data (fleet builds): a small seed applied over /etc at boot; the OS images stay the same for every site.');
export type SiteSettings = z.infer<typeof SiteSettings>;

/** A systemd unit name as `systemctl` takes it (containerd.service, my-agent.service). */
const unitName = z
  .string()
  .regex(/^[A-Za-z0-9:_.@\\-]+\.(service|socket|target|mount|path|timer|device|swap|scope|slice)$/, 'a systemd unit name such as containerd.service');

export const RootfsOs = z
  .strictObject({
    init: z.literal('systemd').describe("The rootfs's /sbin/init is systemd (e.g. an oci: image of Debian with systemd-sysv)."),
    etc: z
      .enum(['overlay', 'readonly'])
      .optional()
      .describe('/etc at run time (default overlay: the image\'s /etc under a tmpfs overlay, so systemd can write machine-id and the site data lands there; readonly: the image\'s /etc as is, and systemd keeps a transient machine-id).'),
    var: z
      .enum(['tmpfs', 'state'])
      .optional()
      .describe(
        '/var at run time (default tmpfs: the image\'s /var under a tmpfs overlay, fresh each boot; state: an ext4 file system on the STATE partition, behind its 1 MiB site-seed area, made and filled from the image\'s /var on the first boot and kept across reboots, upgrades and rollbacks; needs dm_mod (or dm_verity) in kernel.modules and dmsetup and mke2fs (e2fsprogs) in initramfs.programs).',
      ),
  })
  .describe(
    'A full OS as the root (the bootc / Kairos model): ossify adds only what a read-only, A/B-booted root needs: IMAGE_ID/IMAGE_VERSION in os-release, an empty /etc/machine-id (first-boot semantics), writable /etc, /var, /tmp and /run mounted by the initramfs (no fstab), the ESP on /efi for systemd-bless-boot, and the boot.health gate. See docs/real-os.md.',
  );
export type RootfsOs = z.infer<typeof RootfsOs>;

export const Profile = z
  .strictObject({
    $schema: z.string().optional(),
    extends: z.string().optional().describe('Another profile (path relative to this file) whose settings this one inherits.'),
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, 'lowercase letters, digits, ".", "_" and "-", starting with a letter or digit').describe('Image name.'),
    version: z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+_-]*$/, 'a version such as 1.0.0').describe('Release version.'),
    arch: z.enum(BUILD_ARCHES).default(DEFAULT_ARCH).describe(`Target architecture (uname -m): ${BUILD_ARCHES.join(' or ')}.`),
    epoch: z
      .number()
      .int()
      .nonnegative()
      .max(MAX_EPOCH)
      .default(0)
      .describe('Timestamp (seconds since 1970) for every file and artifact; SOURCE_DATE_EPOCH overrides it.'),
    kernel: z.strictObject({
      input: Input.describe('Where the kernel and its modules come from.'),
      modules: z.array(z.string()).default([]).describe('Modules the initramfs loads (their dependencies are added).'),
      cmdline: z.string().default('').describe('Extra kernel command-line arguments.'),
    }),
    initramfs: z
      .strictObject({
        busybox: Input.describe('Where the static busybox for /init comes from.'),
        compression: z.enum(['gzip', 'zstd', 'none']).default('gzip'),
        level: z
          .number()
          .int()
          .min(1)
          .max(19)
          .optional()
          .describe('Compression level: gzip 1-9 (default 9), zstd 1-19 (default 19). Lower is faster to build; the kernel unpacks any.'),
        programs: z.array(Program).optional().describe('Programs added to the initramfs with their shared libraries.'),
      }),
    rootfs: z.strictObject({
      inputs: z.array(Input).min(1).describe('Trees layered onto the root filesystem, in order; later inputs win.'),
      programs: z.array(Program).optional().describe('Programs added to the rootfs (after inputs) with their shared libraries.'),
      allRoot: z.boolean().default(true).describe('Make every file owned by root:root.'),
      squashfs: SquashfsSettings.prefault({}),
      os: RootfsOs.optional(),
      verity: z
        .boolean()
        .optional()
        .describe(
          'Protect the root with dm-verity (default false when absent; profiles/default.yaml turns it on): a sha256 hash tree after the squashfs in each root slot, its root hash on the kernel command line; the initramfs refuses (reboots) a slot whose data does not match. Needs the dm_verity module in kernel.modules and dmsetup (or veritysetup) in initramfs.programs.',
        ),
    }),
    boot: z
      .strictObject({
        loader: z.enum(['systemd-boot']).default('systemd-boot'),
        systemdBoot: Input.prefault({ deb: 'systemd-boot-efi' }).describe('Where systemd-boot (usr/lib/systemd/boot/efi/systemd-boot<x64|aa64>.efi) comes from.'),
        timeout: z.number().int().min(0).default(0).describe('Seconds systemd-boot shows its menu.'),
        tries: z.number().int().min(1).max(9).default(3).describe('Boot attempts for a freshly written slot before falling back.'),
        entries: z
          .enum(['type1', 'uki'])
          .optional()
          .describe(
            'How slots boot (default type1): Boot Loader Specification Type #1 entries (loader/entries/*.conf naming a kernel and initrd on the ESP), or signed-ready unified kernel images (Type #2, EFI/Linux/*.efi: systemd-stub with the kernel, initrd and command line inside one PE file).',
          ),
        secureBoot: SecureBootSettings.optional(),
        health: z
          .array(unitName)
          .optional()
          .describe(
            'Units that must be active before a freshly written slot is blessed (rootfs.os with systemd: boot-complete.target requires them, so systemd-bless-boot only marks the entry good once they run; a unit that fails reboots the machine unblessed, and after boot.tries the previous slot boots again).',
          ),
        healthTimeout: z
          .number()
          .int()
          .min(1)
          .optional()
          .describe('Seconds from boot the boot.health units may take before the machine reboots unblessed (default: no limit).'),
      })
      .prefault({}),
    disk: z
      .strictObject({
        esp: size.default('256MiB'),
        root: size.default('512MiB').describe('Size of each root slot (A and B); leave room for growth.'),
        state: size
          .default('64MiB')
          .describe("Size of the STATE partition (persistent; an install grows it to fill the disk): its first MiB is the site seed area; with rootfs.os.var: state, /var's file system is the rest."),
      })
      .prefault({}),
    site: SiteSettings.optional(),
    outputs: z
      .array(OutputSpec)
      .min(1)
      .optional()
      .describe(
        `Image formats the disk is written in beside disk.raw (default [raw]): ${OUTPUT_NAMES.join(', ')}; an entry is a name or { format: NAME, …settings } (qcow2: compression: zlib). Each is listed with its sha256 in build.json; \`ossify build --output\` overrides the list. Not part of the profile digest: the disk is the same whatever formats it is also written in.`,
      ),
  })
  .superRefine((p, ctx) => {
    if ((p.boot.health || p.boot.healthTimeout !== undefined) && p.rootfs.os?.init !== 'systemd') {
      ctx.addIssue({
        code: 'custom',
        path: ['boot', p.boot.health ? 'health' : 'healthTimeout'],
        // Read as the hint "boot.health must be <message>".
        message: 'used with rootfs.os.init: systemd (with ossify\'s busybox init, the rootfs\'s own init decides when to bless: see docs/real-os.md)',
      });
    }
    if (p.initramfs.level !== undefined && p.initramfs.compression !== 'zstd' && p.initramfs.level > 9) {
      ctx.addIssue({
        code: 'custom',
        path: ['initramfs', 'level'],
        // Read as the hint "initramfs.level must be <message>".
        message: `at most 9 for ${p.initramfs.compression} (levels 10-19 are zstd's)`,
      });
    }
    if (p.rootfs.os?.var === 'state') varOnStateIssues(p).forEach((i) => ctx.addIssue({ code: 'custom', ...i }));
    if (p.boot.secureBoot && p.boot.entries !== 'uki') {
      ctx.addIssue({
        code: 'custom',
        path: ['boot', 'secureBoot'],
        // Read as the hint "boot.secureBoot must be <message>".
        message: 'used with boot.entries: uki (with Type #1 entries the initrd and the kernel command line, which pins the dm-verity root hash, are not covered by any signature)',
      });
    }
  })
  .describe('An ossify build profile.');

export type Profile = z.infer<typeof Profile>;

/** Whether a programs list (initramfs.programs) carries a program by one of these file names. */
export function hasProgram(programs: readonly { path: string }[] | undefined, ...names: string[]): boolean {
  return (programs ?? []).some((prog) => names.includes(prog.path.slice(prog.path.lastIndexOf('/') + 1)));
}

/**
 * What `rootfs.os.var: state` needs: device-mapper in the initramfs (a linear map of STATE
 * behind its seed area), dmsetup to make the map, mke2fs for the first boot's file system, and
 * a STATE with room for it. Each message reads as the hint "<path> must be <message>".
 */
function varOnStateIssues(p: { kernel: { modules: string[] }; initramfs: { programs?: { path: string }[] | undefined }; disk: { state: number | string } }): { path: string[]; message: string }[] {
  const issues: { path: string[]; message: string }[] = [];
  const why = 'for rootfs.os.var: state';
  if (!p.kernel.modules.some((m) => /^dm[-_]/.test(m))) {
    issues.push({ path: ['kernel', 'modules'], message: `a list that loads device-mapper (dm_mod, or dm_verity, which needs it) ${why}` });
  }
  const programs = p.initramfs.programs;
  const missing = [
    ...(hasProgram(programs, 'dmsetup') ? [] : ['{ path: sbin/dmsetup, from: { deb: dmsetup, depends: true } }']),
    ...(hasProgram(programs, 'mke2fs', 'mkfs.ext4') ? [] : ['{ path: sbin/mke2fs, from: { deb: e2fsprogs, depends: true } }']),
  ];
  if (missing.length) issues.push({ path: ['initramfs', 'programs'], message: `a list with ${missing.join(' and ')} ${why}` });
  const state = parseSize(p.disk.state);
  if (state < VAR_STATE_MIN) issues.push({ path: ['disk', 'state'], message: `at least ${VAR_STATE_MIN / MiB}MiB ${why} (1 MiB of site seed area and the file system), not ${state} bytes` });
  return issues;
}
/** What a profile file may contain before `extends` is applied and defaults filled in. */
export type ProfileInput = z.input<typeof Profile>;

const UNITS: Record<string, number> = { B: 1, K: 1024, KIB: 1024, M: 1 << 20, MIB: 1 << 20, G: 1 << 30, GIB: 1 << 30, T: 2 ** 40, TIB: 2 ** 40 };

export function parseSize(v: number | string): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(v.trim());
  if (!m) throw new Error(`not a size: ${v}`);
  const unit = UNITS[(m[2] || 'B').toUpperCase()];
  if (unit === undefined) throw new Error(`unknown size unit in ${v}`);
  return Math.round(Number(m[1]) * unit);
}

export const PROFILE_SCHEMA_ID = 'urn:ossify:schema:profile';

/** The JSON Schema of what a profile file may contain (before defaults), for editors and CI. */
export function profileJsonSchema(): Record<string, unknown> {
  const { $schema, ...rest } = z.toJSONSchema(Profile, { io: 'input', target: 'draft-2020-12' }) as Record<string, unknown>;
  return { $schema, $id: PROFILE_SCHEMA_ID, title: 'ossify build profile', ...rest };
}

/** profiles/schema.json exactly: 2-space JSON with a trailing newline, so it diffs cleanly. */
export function profileJsonSchemaText(): string {
  return `${JSON.stringify(profileJsonSchema(), null, 2)}\n`;
}
