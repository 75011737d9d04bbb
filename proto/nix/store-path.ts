// Store path syntax: <storeDir>/<32 nix32 chars>-<name>. Pure functions.

import { createHash } from "node:crypto";
import { InvalidInputError } from "../errors.js";
import { compressHash, NIX32_ALPHABET, nix32Encode } from "./nix32.js";

/** Length of the hash part of a store path basename. */
export const HASH_PART_LENGTH = 32;
/** Nix refuses store path names longer than this. */
export const MAX_NAME_LENGTH = 211;

const HASH_PART_RE = new RegExp(`^[${NIX32_ALPHABET}]{${HASH_PART_LENGTH}}$`);
const NAME_RE = /^[A-Za-z0-9+\-._?=]+$/;

/** The pieces of a valid store path. */
export interface ParsedStorePath {
  storeDir: string;
  hashPart: string;
  name: string;
  baseName: string;
}

/** True if `s` is a syntactically valid 32-char store path hash part. */
export function isHashPart(s: string): boolean {
  return HASH_PART_RE.test(s);
}

/** True if `name` may follow the hash in a store path basename. */
export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_NAME_LENGTH && NAME_RE.test(name) && !name.startsWith(".");
}

/** True if `s` is a valid store path basename (`<hash>-<name>`). */
export function isStoreBaseName(s: string): boolean {
  return s.length > HASH_PART_LENGTH + 1 && s[HASH_PART_LENGTH] === "-" &&
    isHashPart(s.slice(0, HASH_PART_LENGTH)) && isValidName(s.slice(HASH_PART_LENGTH + 1));
}

/** Checks that a store dir is absolute, normalised and has no trailing slash. */
export function assertStoreDir(storeDir: string): void {
  if (!storeDir.startsWith("/") || storeDir.endsWith("/") || storeDir.split("/").slice(1).some((c) => c === "" || c === "." || c === "..")) {
    throw new InvalidInputError(`invalid store dir '${storeDir}'`);
  }
}

/** Parses a full store path that must lie directly in `storeDir`; throws InvalidInputError. */
export function parseStorePath(path: string, storeDir: string): ParsedStorePath {
  assertStoreDir(storeDir);
  const prefix = storeDir + "/";
  if (!path.startsWith(prefix)) throw new InvalidInputError(`path '${path}' is not in the store dir '${storeDir}'`);
  const baseName = path.slice(prefix.length);
  if (!isStoreBaseName(baseName)) throw new InvalidInputError(`'${path}' is not a valid store path`);
  return { storeDir, hashPart: baseName.slice(0, HASH_PART_LENGTH), name: baseName.slice(HASH_PART_LENGTH + 1), baseName };
}

/** True if `path` is a valid store path in `storeDir`. */
export function isStorePath(path: string, storeDir: string): boolean {
  try {
    parseStorePath(path, storeDir);
    return true;
  } catch {
    return false;
  }
}

/** The basename of a store path (`<hash>-<name>`), validated. */
export function baseName(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  if (!isStoreBaseName(base)) throw new InvalidInputError(`'${path}' is not a valid store path`);
  return base;
}

/** The 32-char hash part of a store path or basename, validated. */
export function hashPart(path: string): string {
  return baseName(path).slice(0, HASH_PART_LENGTH);
}

/** The store dir a full store path lives in. */
export function storeDirOf(path: string): string {
  baseName(path);
  return path.slice(0, path.lastIndexOf("/"));
}

/**
 * Computes a store path the way Nix's makeStorePath does: `type` is e.g. `source`,
 * `output:out` or `text:<ref>:<ref>`, `innerSha256` the hash of the contents/derivation.
 */
export function makeStorePath(type: string, innerSha256: Uint8Array, name: string, storeDir: string): string {
  assertStoreDir(storeDir);
  if (!isValidName(name)) throw new InvalidInputError(`invalid store path name '${name}'`);
  const fingerprint = `${type}:sha256:${Buffer.from(innerSha256).toString("hex")}:${storeDir}:${name}`;
  const digest = createHash("sha256").update(fingerprint).digest();
  return `${storeDir}/${nix32Encode(compressHash(digest, 20))}-${name}`;
}

/** The path Nix gives a directory tree added as a recursive `source` with these references (none of them itself). */
export function makeSourceStorePath(narSha256: Uint8Array, name: string, referencePaths: readonly string[], storeDir: string): string {
  return makeStorePath(["source", ...[...referencePaths].sort()].join(":"), narSha256, name, storeDir);
}
