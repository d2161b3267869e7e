#!/usr/bin/env node
// Part of `npm run build`: tsc compiles builder/ to dist/builder/ but copies nothing else, and
// the shell scripts ossify puts into images (builder/**/*.sh) are read next to their modules.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
for (const f of readdirSync(join(root, 'builder'), { recursive: true })) {
  if (typeof f !== 'string' || !f.endsWith('.sh')) continue;
  const to = join(root, 'dist', 'builder', f);
  mkdirSync(dirname(to), { recursive: true });
  copyFileSync(join(root, 'builder', f), to);
}
