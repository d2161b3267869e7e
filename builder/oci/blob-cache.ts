import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';

/**
 * Which repositories of a registry are known to hold which blobs, so a push to a new
 * repository mounts them instead of uploading them again. A hint, never trusted: the
 * registry confirms each mount. Kept on the user's machine, never in a build output.
 */
export class BlobLocationCache {
  private data: Record<string, Record<string, string[]>> = {};
  private dirty = false;

  private constructor(readonly path: string | undefined) {}

  static defaultPath(env: NodeJS.ProcessEnv = process.env): string {
    return join(env.XDG_CACHE_HOME || join(env.HOME || homedir(), '.cache'), 'ossify', 'blob-locations.json');
  }

  /** `path` undefined: an in-memory cache that lives as long as the process. */
  static async open(path: string | undefined): Promise<BlobLocationCache> {
    const c = new BlobLocationCache(path);
    if (path) {
      try {
        const j = JSON.parse(await readFile(path, 'utf8')) as { version?: number; registries?: typeof c.data };
        if (j.version === 1 && j.registries && typeof j.registries === 'object') c.data = j.registries;
      } catch {
        // absent or unreadable: start empty, it is only a hint
      }
    }
    return c;
  }

  /** Repositories other than `exclude` that held `digest`, most recent first. */
  candidates(registry: string, digest: string, exclude: string, max = 3): string[] {
    return (this.data[registry]?.[digest] ?? []).filter((r) => r !== exclude).slice(0, max);
  }

  record(registry: string, digest: string, repo: string): void {
    const reg = (this.data[registry] ??= {});
    const list = reg[digest] ?? [];
    if (list[0] === repo) return;
    reg[digest] = [repo, ...list.filter((r) => r !== repo)].slice(0, 5);
    this.dirty = true;
  }

  async save(): Promise<void> {
    if (!this.path || !this.dirty) return;
    // Bounded: keep the most recently touched blobs per registry.
    for (const reg of Object.keys(this.data)) {
      const entries = Object.entries(this.data[reg]!);
      if (entries.length > 5000) this.data[reg] = Object.fromEntries(entries.slice(entries.length - 5000));
    }
    await writeFileAtomic(this.path, `${JSON.stringify({ version: 1, registries: this.data })}\n`);
    this.dirty = false;
  }
}
