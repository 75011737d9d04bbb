// Named errors. `retryable` says whether the same call may succeed later. The
// ones that cross the wire live in proto/errors.ts and are re-exported here.
import { FarmError } from "../../proto/errors.js";

export { AuthError, FarmError, InvalidInputError, TransientError } from "../../proto/errors.js";

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
