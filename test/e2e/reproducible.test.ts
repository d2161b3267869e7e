import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Spdx23Document } from '../helpers/spdx23.ts';
import { PROJECT_ROOT, ossify } from '../helpers/cli.ts';
import { requireTool } from '../helpers/oracle.ts';
import type { BuildRecord } from '../../builder/release/build-json.ts';
import type { SpdxDocument } from '../../builder/trust/sbom.ts';
import type { Statement } from '../../builder/trust/provenance.ts';

/**
 * `ossify build --verify-reproducible` on the default profile: it passes, and it fails with
 * the first differing artifact and offset when the test-only hook OSSIFY_TEST_NONDETERMINISM=1
 * writes the wall clock into the rootfs. The SBOM and provenance of the passing build are
 * checked against the artifacts by tools nobody here wrote (unsquashfs, sha256sum).
 */

const CACHE = join(PROJECT_ROOT, 'out', 'cache');
let root: string;
let dir: string;
let record: BuildRecord & { outDir: string; installer: { manifestDigest: string } };
let stderr: string;

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'ossify-repro-'));
  const r = await ossify(['build', 'profiles/default.yaml', '--out', join(root, 'out'), '--cache-dir', CACHE, '--json', '--verify-reproducible']);
  stderr = r.stderr;
  if (r.exitCode !== 0) throw new Error(`ossify build --verify-reproducible failed (${r.exitCode}):\n${r.stderr}`);
  record = JSON.parse(r.stdout) as typeof record;
  dir = record.outDir;
}, 600_000);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('build --verify-reproducible', () => {
  it('passes on the default profile, having really built twice elsewhere', () => {
    expect(stderr).toMatch(/reproducible: a second build \(TZ=\S+, umask 0[0-7]{2}, LC_ALL=\S+\) is byte-identical, installer image sha256:[0-9a-f]{64}/);
    expect(stderr).toContain(record.installer.manifestDigest);
    // the second output lived in a temporary directory that is gone again
    expect(readdirSync(join(root, 'out')).filter((n) => !n.startsWith('.'))).toEqual(expect.arrayContaining(['ossify-default-1.0.0']));
  });

  it('fails naming the first differing artifact and offset when the build is not deterministic', async () => {
    const out = join(root, 'nondeterministic');
    const r = await ossify(['build', 'profiles/default.yaml', '--out', out, '--cache-dir', CACHE, '--verify-reproducible'], { env: { OSSIFY_TEST_NONDETERMINISM: '1' } });
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/error: not reproducible: sbom\.spdx\.json differs at byte \d+ \(0x[0-9a-f]+\): rootfs file \.\/etc\/ossify-test-nondeterminism has different contents/);
    expect(r.stderr).toMatch(/hint: \d+ differing files: sbom\.spdx\.json, rootfs\.squashfs, disk\.raw, provenance\.intoto\.json, build\.json/);
    const kept = /second build \(.*\): (\S+) \(kept for diffing\)/.exec(r.stderr)?.[1];
    expect(kept && existsSync(kept)).toBe(true);
    await rm(join(kept!, '..', '..', '..'), { recursive: true, force: true });
  }, 600_000);
});

describe('the SBOM of the build', () => {
  it('follows the SPDX 2.3 document rules (fields, enumerations, references), and a broken one does not', () => {
    const doc = JSON.parse(readFileSync(join(dir, 'sbom.spdx.json'), 'utf8')) as unknown;
    const ok = Spdx23Document.safeParse(doc);
    expect(ok.success, ok.success ? '' : JSON.stringify(ok.error.issues.slice(0, 5))).toBe(true);
    const broken = JSON.parse(JSON.stringify(doc)) as { files: { checksums: unknown[] }[]; relationships: { relatedSpdxElement: string }[] };
    broken.files[0]!.checksums = broken.files[0]!.checksums.slice(1);
    broken.relationships[0]!.relatedSpdxElement = 'SPDXRef-Nowhere';
    expect(Spdx23Document.safeParse(broken).success).toBe(false);
  });

  it('lists every Debian input with its exact version and sha256, as build.json records them', () => {
    const doc = JSON.parse(readFileSync(join(dir, 'sbom.spdx.json'), 'utf8')) as SpdxDocument;
    const debs = record.sources.filter((s) => s.kind === 'deb');
    expect(debs.length).toBeGreaterThanOrEqual(3);
    for (const s of debs) {
      const p = doc.packages.find((x) => x.name === s.name);
      expect(p, s.name).toBeDefined();
      expect(p!.versionInfo).toBe(s.version);
      expect(p!.checksums).toEqual([{ algorithm: 'SHA256', checksumValue: s.sha256 }]);
      expect(p!.externalRefs?.[0]?.referenceLocator).toBe(`pkg:deb/debian/${encodeURIComponent(s.name)}@${encodeURIComponent(s.version!)}`);
    }
    expect(doc.packages.find((x) => x.name === 'busybox-static')?.versionInfo).toMatch(/^1:1\.\d+/);
  });

  it('lists every regular file of the rootfs with the sha256 unsquashfs extracts, and is itself in the rootfs', async () => {
    requireTool('unsquashfs', 'squashfs-tools');
    requireTool('sha256sum', 'coreutils');
    const x = join(root, 'rootfs');
    await execa('unsquashfs', ['-no-xattrs', '-d', x, join(dir, 'rootfs.squashfs')]);
    const find = await execa('find', ['.', '-type', 'f', '-print0'], { cwd: x });
    const files = find.stdout.split('\0').filter(Boolean).sort();
    const sums = await execa('sha256sum', ['--', ...files], { cwd: x });
    const actual = new Map(sums.stdout.trim().split('\n').map((l) => [l.slice(66), l.slice(0, 64)]));
    const doc = JSON.parse(readFileSync(join(dir, 'sbom.spdx.json'), 'utf8')) as SpdxDocument;
    const listed = new Map(doc.files.map((f) => [f.fileName, f.checksums.find((c) => c.algorithm === 'SHA256')!.checksumValue]));
    actual.delete('./usr/share/ossify/sbom.spdx.json');
    expect(listed).toEqual(actual);
    // The copy in the image is the very document beside the outputs.
    expect(readFileSync(join(x, 'usr/share/ossify/sbom.spdx.json')).equals(readFileSync(join(dir, 'sbom.spdx.json')))).toBe(true);
    expect(statSync(join(x, 'usr/share/ossify/sbom.spdx.json')).mode & 0o777).toBe(0o644);
    expect(doc.creationInfo.created).toBe(new Date(record.epoch * 1000).toISOString().replace('.000Z', 'Z'));
  });
});

describe('the provenance of the build', () => {
  it('names the profile digest, every artifact, the SBOM, the installer image and every input digest', () => {
    const s = JSON.parse(readFileSync(join(dir, 'provenance.intoto.json'), 'utf8')) as Statement;
    expect(s._type).toBe('https://in-toto.io/Statement/v1');
    expect(s.predicateType).toBe('https://slsa.dev/provenance/v1');
    const subjects = new Map(s.subject.map((x) => [x.name, x.digest?.sha256]));
    for (const [name, a] of Object.entries(record.artifacts)) expect(subjects.get(name), name).toBe(sha256(readFileSync(join(dir, name))) === a.sha256 ? a.sha256 : 'artifact changed');
    expect(subjects.get('sbom.spdx.json')).toBe(sha256(readFileSync(join(dir, 'sbom.spdx.json'))));
    expect(`sha256:${subjects.get('installer-image')}`).toBe(record.installer.manifestDigest);
    const ext = s.predicate.buildDefinition.externalParameters as { profile: { digest: { sha256: string } } };
    expect(`sha256:${ext.profile.digest.sha256}`).toBe(record.profileDigest);
    const deps = s.predicate.buildDefinition.resolvedDependencies;
    for (const src of record.sources.filter((x) => x.sha256)) expect(deps.some((d) => d.name === src.name && d.digest?.sha256 === src.sha256), src.name).toBe(true);
    expect(s.predicate.runDetails.builder.version.ossify).toMatch(/^\d+\.\d+\.\d+/);
  });
});
