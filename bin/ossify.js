#!/usr/bin/env node
// The ossify command: compiled JavaScript only (dist/, made by `npm run build`), never tsx.
// Plain JavaScript that parses on any Node, so that an old runtime gets a clear answer.
import { spawnSync } from 'node:child_process';
import module from 'node:module';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const FLOOR = [22, 15];
const root = fileURLToPath(new URL('..', import.meta.url));
const compiled = new URL('../dist/builder/cli.js', import.meta.url);

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < FLOOR[0] || (major === FLOOR[0] && minor < FLOOR[1])) {
  // The set-up installs a supported Node into the checkout when the host's is older: use it.
  const local = `${root}.runtime/bin/node`;
  if (process.env.OSSIFY_REEXEC !== '1' && existsSync(local)) {
    const r = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, OSSIFY_REEXEC: '1' },
    });
    if (r.signal) process.kill(process.pid, r.signal);
    process.exit(r.status ?? 1);
  }
  process.stderr.write(
    `error: ossify needs Node.js >= ${FLOOR.join('.')}; this is ${process.version}\n` +
      `hint: install Node 22 LTS or 24 LTS, or run ./scripts/install-host.sh in the checkout (it puts Node 24 in .runtime/)\n`,
  );
  process.exit(1);
}

const compiledPath = fileURLToPath(compiled);
if (!existsSync(compiledPath)) {
  process.stderr.write(`error: ${compiledPath} is missing\nhint: run \`npm run build\` (or \`npx tsx builder/cli.ts\` to run the source)\n`);
  process.exit(1);
}
// In a checkout, refuse a dist/ older than the source it was built from: a stale CLI would
// run code nobody is reading (or, for a shell script `npm run build` copies into dist/, write
// it into images). An installed package ships no builder/, so this costs nothing there.
const source = `${root}builder`;
if (existsSync(source)) {
  const built = statSync(compiledPath).mtimeMs;
  const stale = readdirSync(source, { recursive: true }).find(
    (f) =>
      typeof f === 'string' &&
      (f.endsWith('.ts') || f.endsWith('.sh')) &&
      (statSync(`${source}/${f}`).mtimeMs > built || (f.endsWith('.sh') && !existsSync(`${root}dist/builder/${f}`))),
  );
  if (stale) {
    process.stderr.write(`error: dist/ is older than builder/${stale}\nhint: run \`npm run build\` (or \`npx tsx builder/cli.ts\` to run the source)\n`);
    process.exit(1);
  }
}
// V8's compiled code for ossify's modules is kept between runs (Node's own cache directory):
// start-up is most of a no-change rebuild. It never changes what a build writes.
module.enableCompileCache?.();
await import(compiled.href);
