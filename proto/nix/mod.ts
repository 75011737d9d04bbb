// Nix's own formats and the binary cache client: NAR (dump, parse, restore,
// hash), narinfo, nix32, store paths, ed25519 signatures, `nix-store --export`
// streams, cache compression, closure walks, and CacheClient.
//
// Why under proto/: the worker (fetches inputs, uploads outputs), the CLI
// (uploads sources, installs results) and the coordinator's cache server all
// speak these formats to each other over HTTP, so they are part of the contract
// just as farm.proto is. The server side (HTTP routes, upload handling, disk
// storage) stays in coordinator/cache/. install/ puts a verified closure into
// a local store dir without Nix, for `farm install` and for a worker that has
// no Nix of its own. Nothing here imports the coordinator or the worker.
export { parseDerivation, type AtermDerivation } from "./aterm.js";
export { CacheClient } from "./client.js";
export { forEachAfterReferences, mapLimit, walkClosure } from "./closure.js";
export { asCompression, compressGzip, compressionExtension, compressWherePays, compressXz, compressZstd, decompress, type AsIsRule, type Compression, type MaybeCompressed } from "./compression.js";
export { BusyError, ConflictError, HashMismatchError, InsufficientSpaceError, MissingReferenceError, NotInCacheError, TooLargeError, UntrustedError } from "./errors.js";
export { derivationPathOf, drvNodeFromAterm, drvNodeFromText, parseDrvName, verifiedDrvNode } from "./drv-node.js";
export { findOnPath } from "./find-on-path.js";
export { parseNixVersion } from "./nix-version.js";
export { encodeExport, parseExport, topoSortByReferences, type ExportItem } from "./export-stream.js";
export { dumpPath, formatSha256, HashCounter, hashSource, hashThrough, narEventsOf, parseNar, restoreNar, validatedNar, type HashResult } from "./nar.js";
export { formatNarInfo, normalizeSha256, parseNarInfo, parseSha256, referencePaths, type NarInfo } from "./narinfo.js";
export { nix32Encode } from "./nix32.js";
export {
  currentEntry,
  emptyPackageIndex,
  isPackageName,
  MalformedIndexError,
  PACKAGE_INDEX_PATH,
  readPackageIndex,
  searchIndex,
  signPackageIndex,
  UntrustedIndexError,
  versionOfStorePath,
  withEntry,
  withoutName,
  type PackageEntry,
  type PackageIndex,
} from "./package-index.js";
export { asBuffer, ByteReader, encodeString, encodeU64, iteratorOf, readAllBytes, type ByteSource } from "./serialise.js";
export { generateKeyPair, narInfoFingerprint, parsePublicKey, parseSecretKey, publicKeyOf, signNarInfo, verifyNarInfo, verifySignatures, withSignature, type NixKey, type NixKeyPair } from "./signing.js";
export { assertStoreDir, baseName, hashPart, isHashPart, isStoreBaseName, isStorePath, makeSourceStorePath, makeStorePath, parseStorePath, storeDirOf } from "./store-path.js";
