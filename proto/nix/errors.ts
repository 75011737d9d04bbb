// Errors specific to the binary cache; all extend the shared FarmError tree.

import { AuthError, FarmError, InvalidInputError, TransientError } from "../errors.js";

/** A narinfo is unsigned, signed by no trusted key, or its signature is invalid. */
export class UntrustedError extends AuthError {}

/** Content did not match the hash or size that was declared for it. */
export class HashMismatchError extends InvalidInputError {}

/** An upload or download exceeded a configured size limit. */
export class TooLargeError extends InvalidInputError {}

/** The cache already holds this path with different contents (first writer wins). */
export class ConflictError extends FarmError {}

/** An upload names a reference the cache does not hold yet. */
export class MissingReferenceError extends FarmError {}

/** The cache runs as many uploads of this uploader as it takes at once (HTTP 429): try again shortly. */
export class BusyError extends TransientError {}

/** A requested path is not in the cache. */
export class NotInCacheError extends FarmError {}

/** Not enough free disk space for an operation to complete. */
export class InsufficientSpaceError extends FarmError {}
