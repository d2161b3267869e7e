/**
 * Errors carry the exit code the CLI must use: 1 when the work failed, 2 when the user's
 * input (arguments, profile, archive) is at fault and nothing was attempted or written.
 */
export class OssifyError extends Error {
  readonly exitCode: 1 | 2;
  /** What the user can do about it; printed after the message. */
  readonly hint?: string;
  constructor(message: string, opts: { exitCode?: 1 | 2; hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OssifyError';
    this.exitCode = opts.exitCode ?? 1;
    if (opts.hint !== undefined) this.hint = opts.hint;
  }
}

/** Bad input: a profile, an argument or an archive the user supplied. Exit code 2. */
export class InputError extends OssifyError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { ...opts, exitCode: 2 });
    this.name = 'InputError';
  }
}

/** A host program the operation needs is not installed. */
export class MissingToolError extends OssifyError {
  constructor(tool: string, debianPackage: string, why: string) {
    super(`${tool} not found: ${why}`, { hint: `install it: apt-get install ${debianPackage}` });
    this.name = 'MissingToolError';
  }
}
