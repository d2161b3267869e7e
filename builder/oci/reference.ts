import { InputError } from '../util/errors.ts';

/** `[registry/]repository[:tag][@digest]`, split and validated. */
export interface ImageRef {
  /** Registry host[:port] as the user wrote it, or `docker.io` when none was given. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

// The grammar of distribution's reference package, so we refuse here what a registry would refuse later.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export const DOCKER_HUB = 'docker.io';

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

export function assertDigest(s: string, what = 'digest'): string {
  if (!DIGEST.test(s)) throw new InputError(`${what} ${JSON.stringify(s)} is not a sha256:<64 hex> or sha512:<128 hex> digest`);
  return s;
}

export function parseReference(input: string): ImageRef {
  const bad = (why: string) =>
    new InputError(`invalid image reference ${JSON.stringify(input)}: ${why}`, {
      hint: 'expected [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. 127.0.0.1:5000/ossify/os:1.0.0',
    });
  if (input === '' || /\s/.test(input)) throw bad('empty or contains whitespace');

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`digest ${JSON.stringify(digest)} is not sha256:<64 lowercase hex>`);
  }

  // A colon after the last slash is a tag; one before it belongs to a registry port.
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`tag ${JSON.stringify(tag)} must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
  }

  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))) {
    registry = first;
    parts.shift();
    if (!DOMAIN.test(registry)) throw bad(`registry ${JSON.stringify(registry)} is not a host[:port]`);
  }
  if (parts.length === 0) throw bad('no repository');
  for (const p of parts) {
    if (!PATH_COMPONENT.test(p)) {
      throw bad(`repository component ${JSON.stringify(p)} must be lowercase letters and digits separated by ., _, __ or -`);
    }
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255) throw bad('repository name longer than 255 characters');

  const ref: ImageRef = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** `registry/repository`, the name a pushed digest is printed against. */
export function repoName(ref: Pick<ImageRef, 'registry' | 'repository'>): string {
  return `${ref.registry}/${ref.repository}`;
}

export function formatReference(ref: ImageRef): string {
  return `${repoName(ref)}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/** The host that serves the API: Docker Hub's name is not its API host. */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB || registry === 'index.docker.io' ? 'registry-1.docker.io' : registry;
}

/** Host part without the port, IPv6 brackets removed. */
export function hostOnly(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']'));
  const c = registry.lastIndexOf(':');
  return c >= 0 ? registry.slice(0, c) : registry;
}

/** Plain HTTP is allowed only where nothing leaves the machine. */
export function isLoopbackRegistry(registry: string): boolean {
  const h = hostOnly(registry).toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}
