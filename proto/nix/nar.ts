// The NAR format in one import: strict streaming parser, restore, dump, hashing.

export { NAR_MAGIC, parseNar, readNarEvents, narBytesFrom, narEventsOf, validatedNar, validateEntryName } from "./nar-parse.js";
export type { NarEvent, NarLimits, NarPath } from "./nar-parse.js";
export { dumpPath } from "./nar-dump.js";
export { restoreNar } from "./nar-restore.js";
export { NarHasher, HashCounter, hashThrough, hashSource, formatSha256 } from "./nar-hash.js";
export type { HashResult } from "./nar-hash.js";
