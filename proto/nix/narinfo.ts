// The .narinfo text format of Nix binary caches: parse strictly, format exactly
// as Nix 2.8 does (field order, `sha256:<nix32>` hashes, sorted references).

import { InvalidInputError } from "../errors.js";
import { nix32Decode, nix32Encode } from "./nix32.js";
import { isStoreBaseName, parseStorePath, storeDirOf } from "./store-path.js";

/** One parsed narinfo. References and Deriver are basenames, as on the wire. */
export interface NarInfo {
  storePath: string;
  url: string;
  compression: string;
  fileHash?: string;
  fileSize?: number;
  /** Always normalised to `sha256:<nix32>`. */
  narHash: string;
  narSize: number;
  references: string[];
  deriver?: string;
  sigs: string[];
  ca?: string;
}

const KNOWN_SINGLE = new Set(["StorePath", "URL", "Compression", "FileHash", "FileSize", "NarHash", "NarSize", "References", "Deriver", "CA", "System"]);
const SIG_RE = /^[^:\s]+:[A-Za-z0-9+/]+={0,2}$/;

/** Parses `sha256:<nix32|hex|base64>` into a 32-byte digest; throws InvalidInputError. */
export function parseSha256(s: string): Buffer {
  if (!s.startsWith("sha256:")) throw new InvalidInputError(`'${s}' is not a sha256 hash`);
  const body = s.slice("sha256:".length);
  const digest = body.length === 52 ? nix32Digest(body) : null;
  if (digest !== null) return digest;
  if (/^[0-9a-f]{64}$/.test(body)) return Buffer.from(body, "hex");
  if (body.length === 44 && /^[A-Za-z0-9+/]{43}=$/.test(body)) return Buffer.from(body, "base64");
  throw new InvalidInputError(`'${s}' is not a valid sha256 hash`);
}

function nix32Digest(body: string): Buffer | null {
  try {
    return nix32Decode(body, 32);
  } catch {
    return null;
  }
}

/** Normalises any accepted sha256 notation to `sha256:<nix32>`. */
export function normalizeSha256(s: string): string {
  // Already nix32 and valid: its own normal form (a decode refuses excess bits, so no two texts give one digest).
  if (s.length === 59 && s.startsWith("sha256:") && nix32Digest(s.slice(7)) !== null) return s;
  return `sha256:${nix32Encode(parseSha256(s))}`;
}

function parseSize(key: string, v: string): number {
  if (!/^[0-9]{1,16}$/.test(v) || !Number.isSafeInteger(Number(v))) throw new InvalidInputError(`narinfo: bad ${key} '${v}'`);
  return Number(v);
}

/** Parses narinfo text for a store in `storeDir`; throws InvalidInputError when malformed. */
export function parseNarInfo(text: string, storeDir: string): NarInfo {
  const lines = text.split("\n");
  if (lines.pop() !== "") throw new InvalidInputError("narinfo: missing final newline");
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  for (const line of lines) {
    const m = /^([A-Za-z0-9]+): (.*)$/.exec(line);
    if (!m) throw new InvalidInputError(`narinfo: malformed line '${line.slice(0, 80)}'`);
    const [, key, value] = m;
    if (key === "Sig") {
      if (!SIG_RE.test(value)) throw new InvalidInputError(`narinfo: malformed Sig '${value.slice(0, 80)}'`);
      sigs.push(value);
    } else if (KNOWN_SINGLE.has(key)) {
      if (fields.has(key)) throw new InvalidInputError(`narinfo: duplicate field ${key}`);
      fields.set(key, value);
    } // Unknown fields are ignored, as Nix does, so newer caches stay readable.
  }
  const need = (k: string) => {
    const v = fields.get(k);
    if (v === undefined || v === "") throw new InvalidInputError(`narinfo: missing ${k}`);
    return v;
  };
  const storePath = need("StorePath");
  parseStorePath(storePath, storeDir);
  const url = need("URL");
  if (/\s/.test(url)) throw new InvalidInputError("narinfo: bad URL");
  const narSize = parseSize("NarSize", need("NarSize"));
  if (narSize === 0) throw new InvalidInputError("narinfo: NarSize is 0");
  const refsText = fields.get("References") ?? "";
  const references = refsText === "" ? [] : refsText.split(" ");
  for (const r of references) if (!isStoreBaseName(r)) throw new InvalidInputError(`narinfo: bad reference '${r}'`);
  const info: NarInfo = {
    storePath,
    url,
    // Nix treats a missing Compression as bzip2 (the historical default).
    compression: fields.get("Compression") || "bzip2",
    narHash: normalizeSha256(need("NarHash")),
    narSize,
    references,
    sigs,
  };
  if (!/^[a-z0-9]+$/.test(info.compression)) throw new InvalidInputError("narinfo: bad Compression");
  const fileHash = fields.get("FileHash");
  if (fileHash) info.fileHash = normalizeSha256(fileHash);
  const fileSize = fields.get("FileSize");
  if (fileSize) info.fileSize = parseSize("FileSize", fileSize);
  const deriver = fields.get("Deriver");
  if (deriver && deriver !== "unknown-deriver") {
    if (!isStoreBaseName(deriver) || !deriver.endsWith(".drv")) throw new InvalidInputError(`narinfo: bad Deriver '${deriver}'`);
    info.deriver = deriver;
  }
  const ca = fields.get("CA");
  if (ca) {
    if (!/^(fixed|text):[A-Za-z0-9:+/=_-]+$/.test(ca)) throw new InvalidInputError(`narinfo: bad CA '${ca}'`);
    info.ca = ca;
  }
  return info;
}

/** Formats a narinfo exactly as Nix 2.8 writes one. */
export function formatNarInfo(info: NarInfo): string {
  let s = `StorePath: ${info.storePath}\nURL: ${info.url}\nCompression: ${info.compression}\n`;
  if (info.fileHash !== undefined) s += `FileHash: ${normalizeSha256(info.fileHash)}\n`;
  if (info.fileSize !== undefined) s += `FileSize: ${info.fileSize}\n`;
  s += `NarHash: ${normalizeSha256(info.narHash)}\nNarSize: ${info.narSize}\n`;
  s += `References: ${[...info.references].sort().join(" ")}\n`;
  if (info.deriver) s += `Deriver: ${info.deriver}\n`;
  for (const sig of info.sigs) s += `Sig: ${sig}\n`;
  if (info.ca) s += `CA: ${info.ca}\n`;
  return s;
}

/** Full store paths of a narinfo's references. */
export function referencePaths(info: NarInfo): string[] {
  const dir = storeDirOf(info.storePath);
  return info.references.map((r) => `${dir}/${r}`);
}
