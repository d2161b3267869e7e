import { relative, resolve } from 'node:path';
import { stringify } from 'yaml';
import { loadProfile } from '../profile/load.ts';
import { InputError } from '../util/errors.ts';
import { canonicalJson, sha256Hex } from '../util/hash.ts';

/**
 * `ossify plan`: hands a fleet build to an engine that has more machines than one (GitHub
 * Actions, Kubernetes). The work is cut into units keyed by digest, each one `ossify build` of
 * a few profiles, all sharing stages through a registry cache (`--cache-from/--cache-to`):
 *
 * - phase `base`: one unit per distinct base (the profile without its site data) builds one
 *   profile of that base and so fills the registry cache with everything its sites share;
 * - phase `sites`: every other profile, in batches; each unit only makes its sites' small
 *   stages (seed, disk, installer image) and takes the rest from the registry cache.
 *
 * Units are independent: a `sites` unit that starts before its base is done still builds
 * correctly (it makes the base stages itself), it only repeats work. A unit's id is a digest
 * of its profiles' digests, so an unchanged unit keeps its id between plans.
 */

export interface PlannedProfile {
  /** The path as `ossify build` in the unit is given it (relative to the working directory). */
  path: string;
  digest: string;
  baseDigest: string;
  name: string;
  version: string;
  site?: string;
}

export interface PlanUnit {
  id: string;
  phase: 'base' | 'sites';
  profiles: PlannedProfile[];
}

export interface Plan {
  bases: PlanUnit[];
  sites: PlanUnit[];
}

export interface PlanOptions {
  /** Profiles per `sites` unit; default: enough that there are at most `maxUnits` of them. */
  batch?: number;
  maxUnits?: number;
  /** What profile paths are written relative to (the unit's working directory); default process.cwd(). */
  cwd?: string;
}

/** GitHub Actions runs at most 256 jobs of one matrix. */
export const GITHUB_MAX_JOBS = 256;

const SAFE_PATH = /^[A-Za-z0-9._/+-]+$/;

function unitId(profiles: PlannedProfile[]): string {
  return `u-${sha256Hex(canonicalJson(profiles.map((p) => p.digest).sort())).slice(0, 12)}`;
}

export async function makePlan(files: readonly string[], opts: PlanOptions = {}): Promise<Plan> {
  if (files.length === 0) throw new InputError('nothing to plan: give profiles (or --matrix DIR)');
  const cwd = opts.cwd ?? process.cwd();
  const seen = new Set<string>();
  const profiles: PlannedProfile[] = [];
  for (const f of files) {
    const abs = resolve(cwd, f);
    if (seen.has(abs)) continue;
    seen.add(abs);
    const l = await loadProfile(abs);
    const path = relative(cwd, abs) || abs;
    if (!SAFE_PATH.test(path) || path.startsWith('-')) {
      throw new InputError(`profile path ${JSON.stringify(path)} cannot be passed safely to a job's command line`, { hint: 'use paths of letters, digits, ".", "_", "-", "+" and "/"' });
    }
    profiles.push({ path, digest: l.digest, baseDigest: l.baseDigest ?? l.digest, name: l.profile.name, version: l.profile.version, ...(l.profile.site ? { site: l.profile.site.name } : {}) });
  }
  const byBase = new Map<string, PlannedProfile[]>();
  for (const p of [...profiles].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    byBase.set(p.baseDigest, [...(byBase.get(p.baseDigest) ?? []), p]);
  }
  const bases: PlanUnit[] = [];
  const rest: PlannedProfile[] = [];
  for (const [base, group] of [...byBase.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    // The base profile itself when it is in the list, else its first site.
    const rep = group.find((p) => p.digest === base) ?? group[0]!;
    bases.push({ id: unitId([rep]), phase: 'base', profiles: [rep] });
    rest.push(...group.filter((p) => p !== rep));
  }
  const maxUnits = opts.maxUnits ?? GITHUB_MAX_JOBS;
  const batch = opts.batch ?? Math.max(1, Math.ceil(rest.length / maxUnits));
  if (!Number.isInteger(batch) || batch < 1) throw new InputError(`--batch ${opts.batch} is not a positive whole number`);
  const sites: PlanUnit[] = [];
  for (let i = 0; i < rest.length; i += batch) {
    const members = rest.slice(i, i + batch);
    sites.push({ id: unitId(members), phase: 'sites', profiles: members });
  }
  if (bases.length > maxUnits || sites.length > maxUnits) {
    throw new InputError(`the plan has ${Math.max(bases.length, sites.length)} units in one phase, more than ${maxUnits}`, { hint: 'raise --batch' });
  }
  return { bases, sites };
}

export interface JobSettings {
  /** The registry repository every unit reads and writes stages in (`--cache-from/--cache-to`). */
  cache?: string;
  /** Push each installer image to this repository (tagged by `ossify build`). */
  push?: string;
  /** Builds at a time inside a unit. */
  jobs?: number;
  insecure?: boolean;
}

/** The `ossify build` arguments of a unit (after `ossify`). */
export function unitArgs(unit: PlanUnit, s: JobSettings): string[] {
  return [
    'build',
    ...(s.cache ? ['--cache-from', s.cache, '--cache-to', s.cache] : []),
    ...(s.push ? ['--push', s.push] : []),
    ...(s.insecure ? ['--insecure'] : []),
    ...(unit.profiles.length > 1 ? ['--jobs', String(s.jobs ?? 2)] : []),
    ...unit.profiles.map((p) => p.path),
  ];
}

function shortName(unit: PlanUnit): string {
  const first = unit.profiles[0]!;
  const label = first.site ?? `${first.name}-${first.version}`;
  return unit.profiles.length > 1 ? `${label} +${unit.profiles.length - 1}` : label;
}

/** A unit as a GitHub Actions matrix entry: strings and numbers only, so `${{ matrix.* }}` can use them. */
function githubEntry(unit: PlanUnit) {
  return {
    id: unit.id,
    phase: unit.phase,
    name: shortName(unit),
    profiles: unit.profiles.map((p) => p.path).join(' '),
    count: unit.profiles.length,
    digests: unit.profiles.map((p) => p.digest.replace(/^sha256:/, '').slice(0, 12)).join(' '),
  };
}

/**
 * `--format github-matrix`: one line of JSON for `$GITHUB_OUTPUT`; a workflow feeds
 * `fromJSON(...).base` and `fromJSON(...).sites` to two jobs' `strategy.matrix` (docs/fleet.md).
 */
export function githubMatrix(plan: Plan): string {
  return JSON.stringify({
    base: { include: plan.bases.map(githubEntry) },
    sites: { include: plan.sites.map(githubEntry) },
    hasSites: plan.sites.length > 0,
  });
}

export interface K8sSettings extends JobSettings {
  /** The container image with ossify and the checkout (its working directory holds the profiles). */
  image: string;
  workdir?: string;
  namespace?: string;
  /** Job name prefix (default `ossify`). */
  prefix?: string;
  /** A kubernetes.io/dockerconfigjson Secret with the registry credentials. */
  registrySecret?: string;
  cpu?: string;
  memory?: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * `--format k8s-jobs`: one batch/v1 Job per unit (YAML documents), the base phase first. Apply
 * the `ossify.dev/phase=base` Jobs, wait for them, then the `sites` ones (docs/fleet.md).
 */
export function k8sJobs(plan: Plan, s: K8sSettings): string {
  const prefix = s.prefix ?? 'ossify';
  if (!DNS_LABEL.test(prefix) || prefix.length > 40) throw new InputError(`--prefix ${prefix} is not a short DNS label`, { hint: 'lowercase letters, digits and "-", at most 40 characters' });
  const docs = [...plan.bases, ...plan.sites].map((unit) => {
    const labels = { 'app.kubernetes.io/name': 'ossify', 'app.kubernetes.io/component': 'build', 'ossify.dev/phase': unit.phase, 'ossify.dev/unit': unit.id };
    const job = {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: {
        name: `${prefix}-${unit.phase}-${unit.id.slice(2)}`,
        ...(s.namespace ? { namespace: s.namespace } : {}),
        labels,
        annotations: {
          'ossify.dev/profiles': unit.profiles.map((p) => p.path).join(' '),
          'ossify.dev/digests': unit.profiles.map((p) => p.digest).join(' '),
        },
      },
      spec: {
        backoffLimit: 2,
        ttlSecondsAfterFinished: 86400,
        template: {
          metadata: { labels },
          spec: {
            restartPolicy: 'Never',
            containers: [
              {
                name: 'ossify',
                image: s.image,
                workingDir: s.workdir ?? '/src',
                command: ['ossify'],
                args: unitArgs(unit, s),
                env: [{ name: 'CI', value: '1' }, ...(s.registrySecret ? [{ name: 'DOCKER_CONFIG', value: '/var/run/ossify/docker' }] : [])],
                resources: { requests: { cpu: s.cpu ?? '2', memory: s.memory ?? '4Gi' } },
                ...(s.registrySecret ? { volumeMounts: [{ name: 'registry-auth', mountPath: '/var/run/ossify/docker', readOnly: true }] } : {}),
              },
            ],
            ...(s.registrySecret
              ? { volumes: [{ name: 'registry-auth', secret: { secretName: s.registrySecret, items: [{ key: '.dockerconfigjson', path: 'config.json' }] } }] }
              : {}),
          },
        },
      },
    };
    return stringify(job, { lineWidth: 0, aliasDuplicateObjects: false });
  });
  return docs.map((d) => `---\n${d}`).join('');
}

/** `--format json`: the whole plan. */
export function planJson(plan: Plan, s: JobSettings): string {
  const unit = (u: PlanUnit) => ({ ...u, args: unitArgs(u, s) });
  return `${JSON.stringify({ version: 1, bases: plan.bases.map(unit), sites: plan.sites.map(unit) }, null, 2)}\n`;
}
