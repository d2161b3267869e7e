#!/usr/bin/env node
// In a checkout the TypeScript source runs through tsx, so a stale dist/ can never shadow it;
// an installed package ships only dist/ (npm run build).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = new URL('../builder/cli.ts', import.meta.url);
if (existsSync(fileURLToPath(source))) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import(new URL('../dist/builder/cli.js', import.meta.url).href);
}
