import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** ossify's own package.json, found from this module whether it runs from source or dist/. */
export function packageInfo(): { name: string; version: string } {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'ossify' && pkg.version) return { name: pkg.name, version: pkg.version };
    } catch {
      /* keep walking up */
    }
    const up = dirname(dir);
    if (up === dir) return { name: 'ossify', version: '0.0.0' };
    dir = up;
  }
}
