import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { GITHUB_MAX_JOBS, githubMatrix, k8sJobs, makePlan, unitArgs, type Plan } from '../../builder/plan/plan.ts';
import { ossify, PROJECT_ROOT } from '../helpers/cli.ts';
import { requireTool, run, runOk } from '../helpers/oracle.ts';
import { startRegistry, type RegistryHandle } from '../helpers/registry.ts';

/**
 * `ossify plan`: units keyed by digest, emitted as a GitHub Actions matrix or Kubernetes Jobs.
 * The YAML is checked by yamllint and by kubectl's kustomize (both parse it with their own
 * YAML libraries), the Job fields against the Kubernetes rules they must follow, and the units
 * are run: the same CLI, sharing a real registry cache.
 */

const root = mkdtempSync(join(tmpdir(), 'ossify-plan-test-'));
const work = join(root, 'checkout');
const INPUTS = join(PROJECT_ROOT, 'out', 'cache');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const sites = ['fleet/sites/site-1.yaml', 'fleet/sites/site-2.yaml', 'fleet/sites/site-3.yaml'];
const all = ['fleet/tiny.yaml', ...sites];
let plan: Plan;

beforeAll(async () => {
  mkdirSync(work, { recursive: true });
  cpSync(join(PROJECT_ROOT, 'test', 'fixtures', 'fleet'), join(work, 'fleet'), { recursive: true });
  plan = await makePlan(all, { cwd: work });
});

const YAMLLINT_CONFIG =
  '{extends: default, rules: {line-length: disable, document-start: {present: true}, truthy: {check-keys: false}, braces: {max-spaces-inside: 1}, brackets: {max-spaces-inside: 1}}}';

function yamllint(file: string): void {
  requireTool('yamllint', 'yamllint');
  const r = run('yamllint', ['-s', '-d', YAMLLINT_CONFIG, file]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

describe('a plan', () => {
  it('has one base unit per distinct base and the other profiles in sites units', () => {
    expect(plan.bases).toHaveLength(1);
    expect(plan.bases[0]!.profiles.map((p) => p.path)).toEqual(['fleet/tiny.yaml']);
    expect(plan.sites.map((u) => u.profiles.map((p) => p.path))).toEqual(sites.map((s) => [s]));
    for (const u of [...plan.bases, ...plan.sites]) expect(u.id).toMatch(/^u-[0-9a-f]{12}$/);
    expect(new Set(plan.sites.map((u) => u.id)).size).toBe(3);
  });

  it('keys units by their profiles\' digests: the same profiles, the same ids; a changed one, a new id', async () => {
    const again = await makePlan([...all].reverse(), { cwd: work });
    expect(again).toEqual(plan);
    const batched = await makePlan(all, { cwd: work, batch: 2 });
    expect(batched.sites.map((u) => u.profiles.length)).toEqual([2, 1]);
    const file = join(work, 'fleet', 'sites', 'site-3.yaml');
    const before = readFileSync(file, 'utf8');
    writeFileSync(file, before.replace('STORE: "3"', 'STORE: "33"'));
    try {
      const changed = await makePlan(all, { cwd: work });
      expect(changed.sites.slice(0, 2)).toEqual(plan.sites.slice(0, 2));
      expect(changed.sites[2]!.id).not.toBe(plan.sites[2]!.id);
      expect(changed.bases).toEqual(plan.bases);
    } finally {
      writeFileSync(file, before);
    }
  });

  it('without its base in the list, builds the first site in the base phase', async () => {
    const p = await makePlan(sites, { cwd: work });
    expect(p.bases[0]!.profiles.map((x) => x.path)).toEqual([sites[0]]);
    expect(p.sites.flatMap((u) => u.profiles.map((x) => x.path))).toEqual(sites.slice(1));
  });

  it('keeps a phase within GitHub\'s job limit by batching', async () => {
    const many = await makePlan(all, { cwd: work, maxUnits: 2 });
    expect(many.sites.length).toBeLessThanOrEqual(2);
    expect(GITHUB_MAX_JOBS).toBe(256);
  });

  it('refuses paths a command line could misread', async () => {
    mkdirSync(join(work, 'odd dir'), { recursive: true });
    writeFileSync(join(work, 'odd dir', 'p.yaml'), readFileSync(join(work, 'fleet', 'tiny.yaml')));
    await expect(makePlan(['odd dir/p.yaml'], { cwd: work })).rejects.toThrow(/cannot be passed safely/);
  });
});

describe('the GitHub Actions matrix', () => {
  it('is one line of JSON with base and sites matrices of plain values', () => {
    const text = githubMatrix(plan);
    expect(text).not.toContain('\n');
    const m = JSON.parse(text) as { base: { include: Record<string, unknown>[] }; sites: { include: Record<string, unknown>[] }; hasSites: boolean };
    expect(m.hasSites).toBe(true);
    expect(m.base.include).toHaveLength(1);
    expect(m.sites.include).toHaveLength(3);
    for (const e of [...m.base.include, ...m.sites.include]) {
      for (const v of Object.values(e)) expect(['string', 'number']).toContain(typeof v);
      expect(Object.keys(e).sort()).toEqual(['count', 'digests', 'id', 'name', 'phase', 'profiles']);
    }
    expect(m.sites.include[0]).toMatchObject({ profiles: 'fleet/sites/site-1.yaml', name: 'site-1', phase: 'sites', count: 1 });
  });

  it('fits the workflow in docs/fleet.md, which yamllint accepts', () => {
    const doc = readFileSync(join(PROJECT_ROOT, 'docs', 'fleet.md'), 'utf8');
    const blocks = [...doc.matchAll(/```yaml\n([\s\S]*?)```/g)].map((b) => b[1]!);
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    blocks.forEach((b, i) => {
      const f = join(root, `doc-${i}.yaml`);
      writeFileSync(f, `---\n${b}`);
      yamllint(f);
    });
    const wf = parse(blocks.find((b) => b.includes('jobs:'))!) as { jobs: Record<string, { strategy?: { matrix: string }; steps: { run?: string }[]; needs?: unknown }> };
    expect(wf.jobs.base!.strategy!.matrix).toBe('${{ fromJSON(needs.plan.outputs.matrix).base }}');
    expect(wf.jobs.sites!.strategy!.matrix).toBe('${{ fromJSON(needs.plan.outputs.matrix).sites }}');
    expect(wf.jobs.sites!.needs).toEqual(['plan', 'base']);
    // Every matrix field the workflow uses is one the plan emits.
    const used = new Set([...blocks.join('\n').matchAll(/matrix\.([a-z]+)/g)].map((m) => m[1]!));
    const emitted = Object.keys((JSON.parse(githubMatrix(plan)) as { sites: { include: object[] } }).sites.include[0]!);
    for (const f of used) expect(emitted).toContain(f);
  });
});

describe('the Kubernetes Jobs', () => {
  const settings = { image: 'registry.example/ossify-builder:1', cache: 'registry.example/ossify/cache', push: 'registry.example/fleet', registrySecret: 'regcred', namespace: 'builds' };

  it('are YAML that yamllint and kubectl kustomize read, one valid batch/v1 Job per unit', () => {
    const text = k8sJobs(plan, settings);
    const file = join(root, 'jobs.yaml');
    writeFileSync(file, text);
    yamllint(file);
    const docs = parseAllDocuments(text).map((d) => d.toJS() as Record<string, any>);
    expect(docs).toHaveLength(4);
    expect(docs.map((d) => d.metadata.labels['ossify.dev/phase'])).toEqual(['base', 'sites', 'sites', 'sites']);
    const units = [...plan.bases, ...plan.sites];
    docs.forEach((d, i) => {
      expect(d.apiVersion).toBe('batch/v1');
      expect(d.kind).toBe('Job');
      expect(d.metadata.name.length).toBeLessThanOrEqual(63);
      expect(d.metadata.name).toMatch(DNS_LABEL);
      expect(d.metadata.namespace).toBe('builds');
      for (const [k, v] of Object.entries(d.metadata.labels as Record<string, string>)) {
        expect(v.length).toBeLessThanOrEqual(63);
        expect(v, k).toMatch(LABEL_VALUE);
      }
      const spec = d.spec.template.spec;
      expect(['Never', 'OnFailure']).toContain(spec.restartPolicy);
      expect(d.spec.template.metadata.labels).toEqual(d.metadata.labels);
      const c = spec.containers[0];
      expect(c.name).toMatch(DNS_LABEL);
      expect(c.image).toBe(settings.image);
      expect(c.command).toEqual(['ossify']);
      expect(c.args).toEqual(unitArgs(units[i]!, settings));
      expect(c.args.slice(0, 5)).toEqual(['build', '--cache-from', settings.cache, '--cache-to', settings.cache]);
      expect(c.volumeMounts[0].name).toBe(spec.volumes[0].name);
      expect(spec.volumes[0].secret.secretName).toBe('regcred');
      expect(c.env).toContainEqual({ name: 'DOCKER_CONFIG', value: c.volumeMounts[0].mountPath });
    });
    requireTool('kubectl', 'kubernetes-client');
    writeFileSync(join(root, 'kustomization.yaml'), 'resources:\n  - jobs.yaml\n');
    const built = runOk('kubectl', ['kustomize', root]);
    const back = parseAllDocuments(built).map((d) => d.toJS() as Record<string, any>);
    expect(back.map((d) => d.metadata.name).sort()).toEqual(docs.map((d) => d.metadata.name).sort());
    const byName = new Map(back.map((d) => [d.metadata.name, d]));
    for (const d of docs) expect(byName.get(d.metadata.name)).toEqual(d);
  });

  it('come from the command line, which insists on an image', async () => {
    const r = await ossify(['plan', ...all, '--format', 'k8s-jobs', '--image', settings.image, '--cache', settings.cache], { cwd: work });
    expect(r.exitCode, r.stderr).toBe(0);
    // (execa drops the last newline)
    expect(`${r.stdout}\n`).toBe(k8sJobs(plan, { image: settings.image, cache: settings.cache, jobs: 2 }));
    const noImage = await ossify(['plan', ...all, '--format', 'k8s-jobs'], { cwd: work });
    expect(noImage.exitCode).toBe(2);
    expect(noImage.stderr).toMatch(/needs --image/);
    const bad = await ossify(['plan', ...all, '--format', 'nomad'], { cwd: work });
    expect(bad.exitCode).toBe(2);
  });
});

describe('running the units', () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(async () => registry?.stop());

  it('the base unit fills the registry cache, and a sites unit on a machine with no cache takes the shared stages from it', async () => {
    const cache = `${registry.host}/fleet/cache`;
    const p = await ossify(['plan', ...all, '--format', 'json', '--cache', cache, '--insecure'], { cwd: work });
    expect(p.exitCode, p.stderr).toBe(0);
    const json = JSON.parse(p.stdout) as { bases: { args: string[] }[]; sites: { args: string[] }[] };
    // The base unit, on a machine with the input downloads at hand.
    const b = await ossify([...json.bases[0]!.args, '--out', join(root, 'm1'), '--cache-dir', INPUTS, '--json'], { cwd: work });
    expect(b.exitCode, b.stderr).toBe(0);
    // A sites unit on another machine: an empty cache directory.
    const s = await ossify([...json.sites[1]!.args, '--out', join(root, 'm2'), '--cache-dir', join(root, 'm2-cache'), '--json'], { cwd: work });
    expect(s.exitCode, s.stderr).toBe(0);
    const rec = JSON.parse(s.stdout) as { cache: Record<string, string>; site: { name: string } };
    expect(rec.site.name).toBe('site-2');
    for (const stage of ['kernel input', 'boot inputs', 'initramfs', 'rootfs tree', 'sbom', 'squashfs', 'kernel', 'disk']) expect(rec.cache[stage], stage).toBe('remote');
    for (const stage of ['site', 'site seed', 'installer image']) expect(rec.cache[stage], stage).toBe('miss');
    // Its image's base and payload layers came from the registry too: only the site layer was compressed here.
    expect(s.stderr).not.toMatch(/error/);
  });
});
