import type { KeyObject } from 'node:crypto';
import { pushBuild, type PushOptions, type PushResult } from '../release/push.ts';
import { RegistryClient } from '../oci/registry.ts';
import { attachBuildOutput, type AttachResult } from './attest.ts';

export interface PublishOptions extends PushOptions {
  /** Also attach the build's provenance, signed with this key (cosign's `.att` tag and a referrer). */
  key?: KeyObject;
}

export interface PublishResult extends PushResult {
  /** What travels with the image: the SBOM referrer and, with a key, the signed provenance. */
  attached: AttachResult;
}

/**
 * Pushes a build output's installer image and attaches what describes it: its SBOM always,
 * its provenance signed when a key is given. Every push of a build goes through here, one
 * image or a matrix of them, so no pushed build lacks its SBOM.
 */
export async function publishBuild(outDir: string, ref: string, opts: PublishOptions = {}): Promise<PublishResult> {
  const { key, ...pushOpts } = opts;
  const pushed = await pushBuild(outDir, ref, pushOpts);
  // The attachments are small: they report no progress of their own.
  const { onProgress: _progress, ...clientOpts } = pushOpts;
  const client = pushOpts.client ?? (await RegistryClient.create(pushed.registry, clientOpts));
  try {
    return { ...pushed, attached: await attachBuildOutput(client, pushed.reference, outDir, key) };
  } finally {
    if (!pushOpts.client) await client.close();
  }
}
