// Named errors. `retryable` says whether the same call may succeed later.

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

/** A state machine was asked for a transition its current state does not allow (a bug, not bad input). */
export class InvalidTransitionError extends FarmError {
  constructor(
    readonly machine: string,
    readonly id: string,
    readonly verb: string,
    readonly from: string,
    options?: { cause?: unknown },
  ) {
    super(`${machine} ${id}: cannot ${verb} from state ${from}`, options);
  }
}

/** A durable write lost a compare-and-set race: someone (e.g. a newer coordinator) wrote the key since we read it. */
export class StoreConflictError extends FarmError {
  constructor(
    readonly bucket: string,
    readonly key: string,
    readonly expectedRevision: number,
    options?: { cause?: unknown },
  ) {
    super(`${bucket}/${key}: revision is no longer ${expectedRevision}; another writer updated it`, options);
  }
}
