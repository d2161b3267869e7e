import type { Command } from 'commander';
import type { RegistryClientOptions } from '../oci/registry.ts';

/** The flags every command that talks to a registry takes, as commander hands them over. */
export interface RegistryFlags {
  caFile?: string;
  insecure?: boolean;
}

/**
 * Declares `--ca-file` and `--insecure` on a command. `when` prefixes their help where only
 * some of the command's work talks to a registry (`with --push: …`).
 */
export function addRegistryOptions(cmd: Command, when?: string): Command {
  const help = (text: string) => (when === undefined ? text : `${when}: ${text}`);
  return cmd
    .option('--ca-file <file>', help('PEM CA certificate that signed the registry certificate'))
    .option('--insecure', help('plain HTTP (only for a registry on 127.0.0.1/localhost)'));
}

/** The registry client settings the flags ask for: only those given, so library defaults stay. */
export function registryOptions(f: RegistryFlags): Pick<RegistryClientOptions, 'caFile' | 'insecure'> {
  return { ...(f.caFile !== undefined ? { caFile: f.caFile } : {}), ...(f.insecure ? { insecure: true } : {}) };
}
