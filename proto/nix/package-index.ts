// The package index: a signed mapping from a name people type (`hello`,
// `tools.x`, `nix`) to the store paths the farm built for it, like a Hydra
// channel. It is one static file in the cache (PACKAGE_INDEX_PATH), so any
// plain HTTP server or CDN serves it with the rest of the cache, and a user
// with only the cache URL and the farm's public key can trust it.
//
// The signature covers `PACKAGE_INDEX_FORMAT + "\n" + body` with the farm's
// key: the prefix keeps an index signature from ever passing as a narinfo
// signature (whose messages start with "1;") and the reverse. The body is
// carried as the exact string that was signed, so no JSON canonicalisation is
// needed. Each name keeps its previous entries, newest first, for pinning and
// rollback.

import { InvalidInputError } from "../errors.js";
import { UntrustedError } from "./errors.js";
import { signFingerprint, verifySignatures, type NixKey } from "./signing.js";
import { parseStorePath } from "./store-path.js";

/** Format tag of the signed file and prefix of the signed message. */
export const PACKAGE_INDEX_FORMAT = "tmpnix-package-index/1";

/** Where the index lives, relative to the cache's base URL. */
export const PACKAGE_INDEX_PATH = "index/packages.json";

/** How many entries a name keeps by default (the newest is the current one). */
export const DEFAULT_ENTRY_HISTORY = 10;

/** The index's answer for a name at one build. */
export interface PackageEntry {
  /** The name users install it by: an attribute path such as `hello` or `tools.x`. */
  name: string;
  /** The version in the main output's name (`hello-2.12` → `2.12`), when it has one. */
  version?: string;
  /** Output name → store path. */
  outputs: Record<string, string>;
  /** Where it came from: the ref it was submitted as and the nixpkgs revision or file. */
  source: string;
  /** When the farm finished it (ISO 8601). */
  builtAt: string;
  /** The job that built it, when a job did. */
  jobId?: string;
}

/** The whole index. */
export interface PackageIndex {
  /** The store dir every output lives in. */
  storeDir: string;
  /** Goes up with every publication, so a client can refuse an older index than one it has seen. */
  serial: number;
  /** When this version of the index was published (ISO 8601). */
  publishedAt: string;
  /** Name → entries, newest first. */
  packages: Record<string, PackageEntry[]>;
}

/** The index is signed by no trusted key, or its signature is bad. */
export class UntrustedIndexError extends UntrustedError {}

/** The index file is not a well-formed package index for this store dir. */
export class MalformedIndexError extends InvalidInputError {}

const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}$/;
const OUTPUT_RE = /^[A-Za-z0-9_][A-Za-z0-9_+-]{0,63}$/;

/** True for a name the index can hold (an attribute path; no slashes, spaces or leading dot). */
export function isPackageName(name: string): boolean {
  return NAME_RE.test(name) && !name.includes("..");
}

/** An empty index for a store dir. */
export function emptyPackageIndex(storeDir: string, now: Date): PackageIndex {
  return { storeDir, serial: 0, publishedAt: now.toISOString(), packages: {} };
}

/** The version part of a store path's name (`…-hello-2.12` → `2.12`), as nix-env splits names. */
export function versionOfStorePath(storePath: string, storeDir: string): string | undefined {
  const { name } = parseStorePath(storePath, storeDir);
  const m = /-(\d[^-]*)$/.exec(name);
  return m?.[1];
}

/** `index` with `entry` as the newest for its name, keeping `history` entries in all. */
export function withEntry(index: PackageIndex, entry: PackageEntry, now: Date, history = DEFAULT_ENTRY_HISTORY): PackageIndex {
  checkEntry(entry, index.storeDir);
  const same = (e: PackageEntry) => sameOutputs(e.outputs, entry.outputs);
  const older = (index.packages[entry.name] ?? []).filter((e) => !same(e));
  const packages = { ...index.packages, [entry.name]: [entry, ...older].slice(0, Math.max(1, history)) };
  return { ...index, serial: index.serial + 1, publishedAt: now.toISOString(), packages };
}

/** `index` without `name` (false when it had no such name). */
export function withoutName(index: PackageIndex, name: string, now: Date): PackageIndex | false {
  if (!index.packages[name]) return false;
  const { [name]: _gone, ...packages } = index.packages;
  return { ...index, serial: index.serial + 1, publishedAt: now.toISOString(), packages };
}

/** The current entry for `name`, or undefined. */
export function currentEntry(index: PackageIndex, name: string): PackageEntry | undefined {
  return index.packages[name]?.[0];
}

/** Names (with their current entry) containing `word` in the name or source, case-insensitively, sorted by name. */
export function searchIndex(index: PackageIndex, word: string): PackageEntry[] {
  const w = word.toLowerCase();
  return Object.keys(index.packages)
    .sort()
    .map((n) => index.packages[n][0])
    .filter((e) => e.name.toLowerCase().includes(w) || e.source.toLowerCase().includes(w));
}

/** The signed file text for `index`. */
export function signPackageIndex(index: PackageIndex, secretKey: string | NixKey): string {
  const body = JSON.stringify(index);
  const signature = signFingerprint(signedMessage(body), secretKey);
  return JSON.stringify({ format: PACKAGE_INDEX_FORMAT, body, signatures: [signature] }) + "\n";
}

/**
 * Parses and verifies a signed index: a trusted signature first, then the shape
 * of everything in it, including that every output is a store path in
 * `storeDir`. Throws UntrustedIndexError or MalformedIndexError, one line each.
 */
export function readPackageIndex(text: string, trustedPublicKeys: (string | NixKey)[], storeDir: string): PackageIndex {
  let outer: unknown;
  try {
    outer = JSON.parse(text);
  } catch (err) {
    throw new MalformedIndexError("package index is not JSON", { cause: err });
  }
  if (!isRecord(outer) || outer.format !== PACKAGE_INDEX_FORMAT || typeof outer.body !== "string" || !Array.isArray(outer.signatures)) {
    throw new MalformedIndexError(`package index is not in format ${PACKAGE_INDEX_FORMAT}`);
  }
  const sigs = outer.signatures.filter((s): s is string => typeof s === "string");
  if (!verifySignatures(signedMessage(outer.body), sigs, trustedPublicKeys)) {
    const by = sigs.map((s) => s.slice(0, Math.max(0, s.indexOf(":")))).join(", ") || "nobody";
    throw new UntrustedIndexError(`package index is not signed by a trusted key (signed by: ${by})`);
  }
  let body: unknown;
  try {
    body = JSON.parse(outer.body);
  } catch (err) {
    throw new MalformedIndexError("package index body is not JSON", { cause: err });
  }
  return checkIndex(body, storeDir);
}

function signedMessage(body: string): Buffer {
  return Buffer.from(`${PACKAGE_INDEX_FORMAT}\n${body}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function sameOutputs(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a).sort();
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

function checkIndex(body: unknown, storeDir: string): PackageIndex {
  if (!isRecord(body) || !isRecord(body.packages) || typeof body.serial !== "number" || typeof body.publishedAt !== "string") {
    throw new MalformedIndexError("package index body lacks serial, publishedAt or packages");
  }
  if (body.storeDir !== storeDir) throw new MalformedIndexError(`package index is for store dir ${String(body.storeDir)}, not ${storeDir}`);
  const packages: Record<string, PackageEntry[]> = {};
  for (const [name, entries] of Object.entries(body.packages)) {
    if (!Array.isArray(entries) || entries.length === 0) throw new MalformedIndexError(`package index entry '${name}' has no builds`);
    packages[name] = entries.map((e) => {
      if (!isRecord(e) || e.name !== name) throw new MalformedIndexError(`package index entry '${name}' is malformed`);
      const entry = e as unknown as PackageEntry;
      checkEntry(entry, storeDir);
      return entry;
    });
  }
  return { storeDir, serial: body.serial, publishedAt: body.publishedAt, packages };
}

function checkEntry(e: PackageEntry, storeDir: string): void {
  const where = `package index entry '${String(e.name)}'`;
  if (typeof e.name !== "string" || !isPackageName(e.name)) throw new MalformedIndexError(`${where}: not a package name`);
  if (typeof e.source !== "string" || typeof e.builtAt !== "string") throw new MalformedIndexError(`${where}: lacks source or builtAt`);
  if (e.version !== undefined && typeof e.version !== "string") throw new MalformedIndexError(`${where}: bad version`);
  if (e.jobId !== undefined && typeof e.jobId !== "string") throw new MalformedIndexError(`${where}: bad jobId`);
  if (!isRecord(e.outputs) || Object.keys(e.outputs).length === 0) throw new MalformedIndexError(`${where}: no outputs`);
  for (const [out, path] of Object.entries(e.outputs)) {
    if (!OUTPUT_RE.test(out) || typeof path !== "string") throw new MalformedIndexError(`${where}: bad output '${out}'`);
    try {
      parseStorePath(path, storeDir);
    } catch (err) {
      throw new MalformedIndexError(`${where}: output ${out} is ${path}, which is not a store path in ${storeDir}`, { cause: err });
    }
  }
}
