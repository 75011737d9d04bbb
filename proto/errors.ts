// Named errors that cross the wire: the worker, the coordinator, the CLI and
// the cache client all raise and recognise these. `retryable` says whether the
// same call may succeed later. Errors only the coordinator's core raises live in
// coordinator/core/errors.ts, which re-exports these.

/** Root of every named farm error. */
export class FarmError extends Error {
  readonly retryable: boolean = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad input from a user, a CLI or a worker: rejected, nothing changed. */
export class InvalidInputError extends FarmError {}

/** A token was missing, unknown or revoked. */
export class AuthError extends FarmError {}

/** Something we depend on (NATS, the cache, Nix) failed in a way that may pass. */
export class TransientError extends FarmError {
  override readonly retryable = true;
}
