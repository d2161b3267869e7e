import { readAr } from '../formats/ar.ts';
import { readTar } from '../tree/from-tar.ts';
import { readContent } from '../tree/content.ts';
import type { FileTree } from '../tree/tree.ts';
import { InputError } from '../util/errors.ts';
import { readArchive } from './archive.ts';
import { decompressBytes } from './decompress.ts';

/**
 * A `.deb` unpacked in-process: `ar` → `data.tar.{xz,zst,gz}` → tree, and the `control`
 * stanza from `control.tar.*`. Maintainer scripts are not run: images are assembled from
 * files only, like `dpkg-deb -x`.
 */

export type Stanza = Record<string, string>;

/** Parses one deb822 stanza (RFC 822 style, continuation lines start with whitespace). */
export function parseStanza(text: string): Stanza {
  const out: Stanza = {};
  let key: string | undefined;
  for (const line of text.split('\n')) {
    if (line === '') {
      if (Object.keys(out).length) break;
      continue;
    }
    if (/^[ \t]/.test(line)) {
      if (key !== undefined) out[key] += `\n${line.trim()}`;
      continue;
    }
    const i = line.indexOf(':');
    if (i <= 0) continue;
    key = line.slice(0, i);
    out[key] = line.slice(i + 1).trim();
  }
  return out;
}

export interface UnpackedDeb {
  tree: FileTree;
  control: Stanza;
}

function member(members: ReturnType<typeof readAr>, prefix: string, origin: string) {
  const found = members.filter((m) => m.name === prefix || m.name.startsWith(`${prefix}.`));
  if (found.length !== 1) {
    throw new InputError(`${origin}: not a Debian package: expected one ${prefix}.* member, found ${found.length ? found.map((m) => m.name).join(', ') : 'none'}`);
  }
  return found[0]!;
}

async function controlOf(members: ReturnType<typeof readAr>, origin: string): Promise<Stanza> {
  const control = member(members, 'control.tar', origin);
  const controlTree = await readTar(decompressBytes(control.data, `${origin} ${control.name}`), { origin: `${origin} ${control.name}` });
  const controlFile = controlTree.get('control');
  return controlFile?.type === 'file' ? parseStanza(new TextDecoder().decode(await readContent(controlFile.content))) : {};
}

function debMembers(bytes: Uint8Array, origin: string): ReturnType<typeof readAr> {
  const members = readAr(bytes, origin);
  const version = members.find((m) => m.name === 'debian-binary');
  if (!version || !/^2\.\d+/.test(new TextDecoder().decode(version.data))) {
    throw new InputError(`${origin}: not a Debian binary package (missing or unsupported debian-binary)`);
  }
  return members;
}

/** Only the control stanza: what resolving a local .deb (name, version, dependencies) needs. */
export async function readDebControl(bytes: Uint8Array, origin: string): Promise<Stanza> {
  return controlOf(debMembers(bytes, origin), origin);
}

export async function unpackDeb(bytes: Uint8Array, origin: string): Promise<UnpackedDeb> {
  const members = debMembers(bytes, origin);
  const control = await controlOf(members, origin);
  const data = member(members, 'data.tar', origin);
  const tree = await readArchive(decompressBytes(data.data, `${origin} ${data.name}`), `${origin} ${data.name}`);
  return { tree, control };
}
