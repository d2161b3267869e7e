import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** A constant the TypeScript side hands a shell script: a string, or a whole number. */
export type ShellConstant = string | number;

const NAME = /^[a-z_][a-z0-9_]*$/;
const INCLUDE = /^# ossify:include (\S+)\n/gm;
const CONSTANTS = '# ossify:constants\n';

/** One word for `sh`, whatever its bytes: single quotes, each `'` as `'\''`. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** `name=value` lines, names checked and values quoted, so no constant can inject shell code. */
export function shellAssignments(constants: Record<string, ShellConstant>): string {
  return Object.entries(constants)
    .map(([name, value]) => {
      if (!NAME.test(name)) throw new Error(`shell constant name ${JSON.stringify(name)} is not a lowercase shell variable name`);
      if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new Error(`shell constant ${name}=${value} is not a whole number`);
      return `${name}=${typeof value === 'number' ? String(value) : shellQuote(value)}\n`;
    })
    .join('');
}

function readShipped(url: URL): string {
  try {
    return readFileSync(url, 'utf8');
  } catch (e) {
    const path = fileURLToPath(url);
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`${path} is missing: ossify's shell scripts ship next to its modules (in a checkout, \`npm run build\` copies them into dist/)`);
    }
    throw e;
  }
}

/**
 * A shell script that ships as a `.sh` file next to the module `base` names (its
 * `import.meta.url`), as the image will carry it: each `# ossify:include FILE` line replaced
 * by that file (relative to the script; a fragment shared by several scripts), and the
 * `# ossify:constants` line by `shellAssignments(constants)`. A script given constants must
 * have that line, and one given none must not, so nothing is silently left unset.
 */
export function composeShellScript(base: string | URL, file: string, constants?: Record<string, ShellConstant>): string {
  const url = new URL(file, base);
  const text = readShipped(url).replace(INCLUDE, (_, inc: string) => {
    const part = readShipped(new URL(inc, url));
    if (part.includes('# ossify:')) throw new Error(`${fileURLToPath(new URL(inc, url))}: an included fragment cannot include or take constants`);
    return part;
  });
  const marks = text.split(CONSTANTS).length - 1;
  if (marks !== (constants ? 1 : 0)) {
    throw new Error(`${fileURLToPath(url)}: ${constants ? 'needs one' : 'takes no constants, so needs no'} \`${CONSTANTS.trim()}\` line (found ${marks})`);
  }
  return constants ? text.replace(CONSTANTS, () => shellAssignments(constants)) : text;
}
