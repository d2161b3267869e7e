import { OssifyError } from '../util/errors.ts';
import { RetryableStatusError } from './auth.ts';
import { TransportError } from './transport.ts';

/** The registry answered, and the answer is final (4xx other than 401/429, or an unexpected status). */
export class RegistryError extends OssifyError {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

/** Bytes that do not hash to the digest they were asked for. Never retried into success. */
export class DigestMismatchError extends OssifyError {
  constructor(message: string) {
    super(message, { hint: 'the registry or something between us and it returned wrong content; nothing was written' });
    this.name = 'DigestMismatchError';
  }
}

/** A broken connection or a 5xx/429 answer: the same request may succeed later. */
export function isRetryable(err: unknown): boolean {
  return (err instanceof TransportError && err.retryable) || err instanceof RetryableStatusError;
}
