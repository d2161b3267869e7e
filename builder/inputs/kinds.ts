import type { Input } from '../profile/schema.ts';
import { debKind } from './deb-input.ts';
import { dirKind } from './dir-input.ts';
import { filesKind } from './files-input.ts';
import type { InputKind } from './kind.ts';
import { ociKind } from './oci-input.ts';
import type { Pin, SourceKey } from './pins.ts';
import { tarKind } from './tar-input.ts';

export type { InputKind, LockSupport, PathRewrite, ResolutionContext } from './kind.ts';

/**
 * Every input kind by the key that names it in a profile (`deb: …`). A new kind is its
 * schema in builder/profile/schema.ts, its module, and one line here.
 */
export const INPUT_KINDS = {
  deb: debKind,
  dir: dirKind,
  tar: tarKind,
  oci: ociKind,
  files: filesKind,
};

export type InputKindName = keyof typeof INPUT_KINDS;

const NAMES = Object.keys(INPUT_KINDS) as InputKindName[];

/** The kind of an input, a pin or a lock key: each holds its kind's name as its one distinguishing key. */
function kindNamed(value: object, what: string): InputKind {
  const name = NAMES.find((n) => n in value);
  if (name === undefined) throw new Error(`${what} of no known input kind: ${Object.keys(value).join(', ')}`);
  // Each kind takes its own inputs only; the name found guarantees this one is its.
  return INPUT_KINDS[name] as unknown as InputKind;
}

export const inputKind = (input: Input): InputKind => kindNamed(input, 'an input');
export const pinKind = (pin: Pin | SourceKey): InputKind => kindNamed(pin, 'a pin');

/** How errors and log lines name an input: its kind and what it points at. */
export const inputOrigin = (input: Input): string => inputKind(input).origin(input);
