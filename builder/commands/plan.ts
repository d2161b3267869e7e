import type { Command } from 'commander';
import { githubMatrix, k8sJobs, makePlan, planJson, type JobSettings } from '../plan/plan.ts';
import { matrixProfiles } from '../matrix.ts';
import { writeFileAtomic } from '../util/atomic.ts';
import { InputError } from '../util/errors.ts';

/** fleet: `ossify plan PROFILES… --format github-matrix|k8s-jobs|json`, see builder/plan and docs/fleet.md. */

interface PlanFlags {
  format: string;
  matrix?: string;
  batch?: string;
  cache?: string;
  push?: string;
  jobs?: string;
  insecure?: boolean;
  image?: string;
  workdir?: string;
  namespace?: string;
  prefix?: string;
  registrySecret?: string;
  output?: string;
}

function positive(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InputError(`${flag} ${v} is not a positive whole number`);
  return n;
}

export function registerPlanCommand(program: Command): Command {
  return program
    .command('plan')
    .description('cut a fleet build into independent work units (a GitHub Actions matrix, or Kubernetes Jobs) that share a registry stage cache')
    .argument('[profiles...]', 'profile YAML files')
    .option('-f, --format <format>', 'github-matrix, k8s-jobs or json', 'github-matrix')
    .option('--matrix <path>', 'also plan the profiles in a directory (*.yaml) or listed in a file')
    .option('--batch <n>', 'profiles per sites unit (default: as few as keep a phase within 256 units)')
    .option('--cache <repo>', 'registry repository every unit reads and writes stages in (--cache-from/--cache-to)')
    .option('--push <repo>', 'each unit pushes its installer images to this repository')
    .option('-j, --jobs <n>', 'builds at a time inside a unit', '2')
    .option('--insecure', 'units talk plain HTTP to the registry (only for one on 127.0.0.1/localhost)')
    .option('--image <ref>', 'k8s-jobs: the container image with ossify and the checkout')
    .option('--workdir <dir>', 'k8s-jobs: the checkout inside that image', '/src')
    .option('--namespace <ns>', 'k8s-jobs: namespace of the Jobs')
    .option('--prefix <name>', 'k8s-jobs: Job name prefix', 'ossify')
    .option('--registry-secret <name>', 'k8s-jobs: a kubernetes.io/dockerconfigjson Secret with the registry credentials')
    .option('-o, --output <file>', 'write the plan to FILE instead of standard output')
    .action(async (args: string[], o: PlanFlags) => {
      const files = [...args, ...(o.matrix ? await matrixProfiles(o.matrix) : [])];
      const batch = positive('--batch', o.batch);
      const plan = await makePlan(files, batch !== undefined ? { batch } : {});
      const jobs: JobSettings = {
        ...(o.cache ? { cache: o.cache } : {}),
        ...(o.push ? { push: o.push } : {}),
        ...(o.insecure ? { insecure: true } : {}),
        jobs: positive('--jobs', o.jobs) ?? 2,
      };
      let text: string;
      if (o.format === 'github-matrix') text = `${githubMatrix(plan)}\n`;
      else if (o.format === 'json') text = planJson(plan, jobs);
      else if (o.format === 'k8s-jobs') {
        if (!o.image) throw new InputError('--format k8s-jobs needs --image', { hint: 'the container image that has ossify and this checkout, e.g. --image registry.example/ossify-builder:1' });
        text = k8sJobs(plan, {
          ...jobs,
          image: o.image,
          ...(o.workdir ? { workdir: o.workdir } : {}),
          ...(o.namespace ? { namespace: o.namespace } : {}),
          ...(o.prefix ? { prefix: o.prefix } : {}),
          ...(o.registrySecret ? { registrySecret: o.registrySecret } : {}),
        });
      } else throw new InputError(`unknown --format ${o.format}`, { hint: 'github-matrix, k8s-jobs or json' });
      if (o.output) await writeFileAtomic(o.output, text);
      else process.stdout.write(text);
      const n = plan.bases.length + plan.sites.length;
      process.stderr.write(`${files.length} profiles → ${n} units (${plan.bases.length} base, ${plan.sites.length} sites)\n`);
    });
}
