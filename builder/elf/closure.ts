import { archByElfMachine } from '../arch.ts';
import { resolveTreePath } from '../tree/walk.ts';
import { readContent } from '../tree/content.ts';
import { FileTree, parentOf, type Entry } from '../tree/tree.ts';
import { walkTreePath } from '../tree/walk.ts';
import { InputError } from '../util/errors.ts';
import { ElfFormatError, isElf, readDynamic, type DynamicInfo } from './dynamic.ts';
import { ldSoConfDirs, multiarchTriplet, systemLibraryDirs } from './search.ts';

/**
 * A program with everything the dynamic loader will open to start it, found the way glibc's
 * ld.so finds it but inside an input tree instead of on the build host (what dracut's
 * inst_binary does with ldd, without running anything): the interpreter, then each
 * DT_NEEDED library, recursively, searched along DT_RPATH (when there is no DT_RUNPATH),
 * DT_RUNPATH, the tree's ld.so.conf and the system directories, skipping libraries of
 * another class or machine as ld.so does. Every path is copied as looked up, symlinks
 * included (`libfoo.so.1 -> libfoo.so.1.2.3` and the file), so the copy resolves the
 * same way in the image. Scripts bring their `#!` interpreter.
 */

export interface Closure {
  tree: FileTree;
  /** Every regular file copied (programs, interpreters, libraries), in the order found. */
  files: string[];
}

interface Loaded {
  path: string;
  info: DynamicInfo;
}

const MAX_LINKS = 40;

/** Copies `path` from `src` to `dst`, following and copying every symlink on the way; returns the file's real path. */
function copyResolved(src: FileTree, dst: FileTree, path: string, what: string): string {
  const w = walkTreePath(src, path, {
    maxLinks: MAX_LINKS,
    onSymlink(at) {
      copyParents(src, dst, at);
      if (!dst.has(at)) dst.set(at, src.get(at)!);
    },
  });
  if (w.kind === 'missing') throw new InputError(`${what}: ${w.at} is not in the tree`);
  if (w.kind === 'loop') throw new InputError(`${what}: too many levels of symbolic links at ${w.at}`);
  const real = w.path;
  const file = src.resolve(real);
  if (file?.type !== 'file') throw new InputError(`${what}: ${real} is a ${file?.type ?? 'missing entry'}, not a file`);
  copyParents(src, dst, real);
  // A hard link's bytes are the file's: copy them as a file of its own.
  dst.set(real, file);
  return real;
}

/** Parent directories keep the source tree's metadata; a symlinked parent is copied as the link. */
function copyParents(src: FileTree, dst: FileTree, path: string): void {
  const chain: string[] = [];
  for (let p = parentOf(path); p !== ''; p = parentOf(p)) chain.unshift(p);
  for (const p of chain) {
    if (dst.has(p)) continue;
    const e = src.get(p);
    if (e?.type === 'dir') {
      const { type: _t, ...meta } = e;
      dst.ensureDir(p, meta);
    }
  }
}

async function fileBytes(tree: FileTree, path: string): Promise<Uint8Array> {
  const e = tree.resolve(path) as Extract<Entry, { type: 'file' }>;
  return readContent(e.content);
}

function expandOrigin(dir: string, origin: string, machine: number): string {
  return dir
    .replace(/\$(\{ORIGIN\}|ORIGIN)/g, `/${origin}`)
    .replace(/\$(\{LIB\}|LIB)/g, `lib/${multiarchTriplet(machine) ?? ''}`)
    .replace(/\$(\{PLATFORM\}|PLATFORM)/g, archByElfMachine(machine)?.uname ?? 'unknown');
}

/** Strips the leading `/` of an absolute path; relative DT_RUNPATH entries are relative to the working directory, meaningless in an image. */
function treeDir(dir: string): string | undefined {
  return dir.startsWith('/') ? dir.replace(/^\/+|\/+$/g, '') : undefined;
}

export async function programClosure(src: FileTree, programs: readonly string[], origin: string): Promise<Closure> {
  const dst = new FileTree();
  const files: string[] = [];
  const done = new Set<string>();
  const confDirs = await ldSoConfDirs(src);

  const add = async (path: string, what: string): Promise<Loaded | undefined> => {
    const real = copyResolved(src, dst, path, what);
    if (done.has(real)) return undefined;
    done.add(real);
    files.push(real);
    const bytes = await fileBytes(src, real);
    if (!isElf(bytes)) {
      const shebang = /^#!\s*(\S+)/.exec(Buffer.from(bytes.subarray(0, 256)).toString('latin1'));
      if (shebang) await program(shebang[1]!, `${what}: interpreter ${shebang[1]}`);
      return undefined;
    }
    try {
      return { path, info: readDynamic(bytes) };
    } catch (err) {
      if (err instanceof ElfFormatError) throw new InputError(`${what}: ${real}: ${err.message}`);
      throw err;
    }
  };

  const matches = async (path: string, want: DynamicInfo): Promise<boolean> => {
    const bytes = await fileBytes(src, path);
    if (!isElf(bytes)) return false;
    try {
      const info = readDynamic(bytes);
      return info.class === want.class && info.machine === want.machine && info.littleEndian === want.littleEndian;
    } catch {
      return false;
    }
  };

  const findLibrary = async (name: string, by: Loaded, rpath: string[]): Promise<string> => {
    const byDir = parentOf(by.path);
    const expand = (dirs: string[]) => dirs.map((d) => treeDir(expandOrigin(d, byDir, by.info.machine))).filter((d): d is string => d !== undefined);
    if (name.includes('/')) return name.replace(/^\/+/, '');
    const dirs = [
      ...(by.info.runpath.length === 0 ? expand(rpath) : []),
      ...expand(by.info.runpath),
      ...confDirs,
      ...systemLibraryDirs(by.info.machine, by.info.class),
    ];
    const tried: string[] = [];
    for (const dir of dirs) {
      const candidate = dir === '' ? name : `${dir}/${name}`;
      if (tried.includes(candidate)) continue;
      tried.push(candidate);
      const e = resolveFile(src, candidate);
      if (e && (await matches(e, by.info))) return candidate;
    }
    throw new InputError(`${origin}: ${by.path} needs ${name}, which is not in the input (searched ${[...new Set(dirs)].map((d) => `/${d}`).join(', ')})`, {
      hint: 'add the package that ships it to the program\'s `from:` input (for a deb: input, `depends: true` follows dependencies)',
    });
  };

  const visit = async (obj: Loaded, rpath: string[]): Promise<void> => {
    // DT_RPATH is inherited along the loading chain; DT_RUNPATH applies to its own object only.
    const chainRpath = [...obj.info.rpath, ...rpath];
    for (const name of obj.info.needed) {
      const path = await findLibrary(name, obj, chainRpath);
      const lib = await add(path, `${origin}: ${obj.path} needs ${name}`);
      if (lib) await visit(lib, chainRpath);
    }
  };

  const program = async (path: string, what: string): Promise<void> => {
    let p = path.replace(/^\/+/, '');
    // Debian 12 packages still ship /sbin, /bin and /lib, merged into /usr only on an
    // installed system: usr/sbin/veritysetup is found as sbin/veritysetup and linked.
    const twin = p.startsWith('usr/') ? p.slice(4) : `usr/${p}`;
    if (resolveFile(src, p) === undefined && /^(usr\/)?(s?bin|lib[^/]*)\//.test(p) && resolveFile(src, twin) !== undefined) {
      copyParents(src, dst, p);
      if (!dst.has(p)) {
        const dirMeta = { mode: 0o755, uid: 0, gid: 0, mtime: 0 };
        dst.ensureDir(parentOf(p), dirMeta);
        dst.set(p, { type: 'symlink', ...dirMeta, mode: 0o777, target: `/${twin}` });
      }
      p = twin;
    }
    const main = await add(p, what);
    if (!main) return;
    if (main.info.interpreter) await add(main.info.interpreter.replace(/^\/+/, ''), `${what}: interpreter ${main.info.interpreter}`);
    await visit(main, []);
  };

  for (const p of programs) await program(p, `${origin}: program ${p}`);
  return { tree: dst, files };
}

/** The real path of a regular file at `path` inside the tree, following its symlinks. */
function resolveFile(tree: FileTree, path: string): string | undefined {
  const real = resolveTreePath(tree, path);
  return real !== undefined && tree.resolve(real)?.type === 'file' ? real : undefined;
}
