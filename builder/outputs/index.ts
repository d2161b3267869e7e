import { z } from 'zod';
import type { OutputFormat } from './types.ts';
import { DISK } from '../release/artifacts.ts';

/**
 * The image formats a build can write from its disk, by name: what the profile's `outputs:`
 * and `ossify build --output` accept. A new format is a writer module (exporting `write`)
 * and one entry here. Writers are loaded only when asked for, so the profile schema can list
 * the names without importing them.
 */
export const OUTPUTS = {
  raw: { description: 'the GPT disk as is, always written', file: DISK, builtIn: true },
  qcow2: {
    description: 'QEMU qcow2 v3, sparse',
    file: 'disk.qcow2',
    options: { compression: z.enum(['none', 'zlib']).optional().describe('Compress data clusters with zlib (default none): smaller, slower to write and to read.') },
    load: () => import('./qcow2.ts'),
  },
  vhd: { description: 'fixed VHD for Azure and Hyper-V, virtual size rounded up to whole MiB', file: 'disk.vhd', load: () => import('./vhd.ts') },
  vmdk: { description: 'stream-optimized VMDK for VMware', file: 'disk.vmdk', load: () => import('./vmdk.ts') },
  ova: { description: 'OVF descriptor, manifest and stream-optimized VMDK in a tar, for VMware and VirtualBox', file: 'disk.ova', load: () => import('./ova.ts') },
  gce: { description: 'disk.raw padded to whole GiB in a GNU sparse tar.gz, as Google Compute Engine imports it', file: 'disk.raw.tar.gz', load: () => import('./gce.ts') },
  iso: {
    description: 'UEFI-bootable hybrid installer ISO (CD-ROM or USB stick): installs the A/B disk to ossify.install=/dev/… or the first empty disk, then boots slot A; with no target it boots the release live from memory',
    file: 'disk.iso',
    load: () => import('../iso/build.ts'),
  },
} satisfies Record<string, OutputFormat>;

export type OutputName = keyof typeof OUTPUTS;
export const OUTPUT_NAMES = Object.keys(OUTPUTS) as [OutputName, ...OutputName[]];

export function outputFormat(name: string): OutputFormat | undefined {
  return Object.hasOwn(OUTPUTS, name) ? (OUTPUTS as Record<string, OutputFormat>)[name] : undefined;
}

/**
 * One entry of `outputs:`: a format name, or `{ format: NAME, …settings }`. The mapping takes
 * every format's settings, and refuses one set for a format it does not belong to.
 */
const settings: z.ZodRawShape = Object.assign({}, ...OUTPUT_NAMES.map((n) => (OUTPUTS[n] as OutputFormat).options ?? {}));
export const OutputSpec: z.ZodType<OutputSpec> = z.union([
  z.enum(OUTPUT_NAMES).describe(`An output format: ${OUTPUT_NAMES.map((n) => `${n} (${OUTPUTS[n].file}): ${(OUTPUTS[n] as OutputFormat).description}`).join('; ')}.`),
  z
    .strictObject({ format: z.enum(OUTPUT_NAMES).describe('The output format.'), ...settings })
    .superRefine((v, ctx) => {
      const own = (OUTPUTS[v.format] as OutputFormat).options ?? {};
      for (const key of Object.keys(v)) {
        if (key === 'format' || key in own || (v as Record<string, unknown>)[key] === undefined) continue;
        const owners = OUTPUT_NAMES.filter((n) => key in ((OUTPUTS[n] as OutputFormat).options ?? {}));
        ctx.addIssue({ code: 'custom', path: [key], message: `left out: it is a setting of ${owners.join(', ')}, not of ${v.format}` });
      }
    })
    .describe('An output format with its settings.'),
]) as unknown as z.ZodType<OutputSpec>;
export type OutputSpec = OutputName | ({ format: OutputName } & Record<string, unknown>);

export interface ResolvedOutput {
  format: OutputName;
  options: Record<string, unknown>;
}

/** The profile's list (default `[raw]`) as formats with options, each once, in registry order. */
export function resolveOutputs(specs: readonly OutputSpec[] | undefined): ResolvedOutput[] {
  const byName = new Map<OutputName, Record<string, unknown>>();
  for (const s of specs ?? ['raw']) {
    if (typeof s === 'string') byName.set(s, byName.get(s) ?? {});
    else {
      const { format, ...options } = s;
      byName.set(format, { ...byName.get(format), ...options });
    }
  }
  // Registry order, so an OVA finds the VMDK already made.
  return OUTPUT_NAMES.filter((n) => byName.has(n)).map((format) => ({ format, options: byName.get(format)! }));
}
