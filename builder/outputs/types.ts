import type { z } from 'zod';
import type { DiskImage } from './disk.ts';
import type { WrittenOutput } from '../release/build-json.ts';

/** What a build hands every output writer. */
export interface OutputContext {
  /** The built disk.raw, with the ranges that hold data. */
  disk: DiskImage;
  build: { name: string; version: string; arch: string; epoch: number; profileDigest: string };
  /** The build directory: the other artifacts (builder/release/artifacts.ts) for formats that need them. */
  dir: string;
  /** Outputs already written by this build, by format name (an OVA reuses the VMDK). */
  made: ReadonlyMap<string, WrittenOutput>;
}

/** One output as build.json lists it. */
export type { WrittenOutput } from '../release/build-json.ts';

export interface FileDigest {
  sha256: string;
  size: number;
}

/**
 * Writes the format to `dest` (a temporary name the caller renames into place); returns the
 * file's digest when it was taken while writing (else the caller reads the file back).
 */
export type OutputWrite = (dest: string, ctx: OutputContext, options: Record<string, unknown>) => Promise<FileDigest | undefined | void>;

export interface OutputFormat {
  /** For `--help` and the profile schema. */
  description: string;
  /** The file name in the build directory. */
  file: string;
  /** Settings of the format, allowed in the profile's `{ format: NAME, … }` form. */
  options?: z.ZodRawShape;
  /** The build always makes this file (disk.raw): listing it only records it in build.json. */
  builtIn?: boolean;
  /** The writer, loaded when the format is asked for. */
  load?: () => Promise<{ write: OutputWrite }>;
}
