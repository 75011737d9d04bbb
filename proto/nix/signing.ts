// Ed25519 signatures over narinfo fingerprints, in Nix's key format:
// secret `name:base64(seed ++ public)` (64 bytes), public `name:base64(public)`.

import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { InvalidInputError } from "../errors.js";
import { normalizeSha256, referencePaths, type NarInfo } from "./narinfo.js";

/** A parsed Nix signing key (secret or public). */
export interface NixKey {
  name: string;
  key: KeyObject;
}

/** A freshly generated key pair in Nix's text format. */
export interface NixKeyPair {
  secretKey: string;
  publicKey: string;
}

function splitKey(text: string, bytes: number, kind: string): { name: string; raw: Buffer } {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(":");
  if (colon <= 0) throw new InvalidInputError(`${kind} key has no name`);
  const name = trimmed.slice(0, colon);
  const b64 = trimmed.slice(colon + 1);
  const raw = Buffer.from(b64, "base64");
  // Round-trip check: Buffer.from silently skips junk characters.
  if (raw.length !== bytes || raw.toString("base64") !== b64) throw new InvalidInputError(`${kind} key '${name}' is malformed`);
  return { name, raw };
}

function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") }, format: "jwk" });
}

function rawPublicKey(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: "jwk" }).x as string, "base64url");
}

/** Parses a Nix secret key (`name:base64(64 bytes)`), checking its public half matches the seed. */
export function parseSecretKey(text: string): NixKey {
  const { name, raw } = splitKey(text, 64, "secret");
  const seed = raw.subarray(0, 32);
  const pub = raw.subarray(32);
  const key = createPrivateKey({
    key: { kty: "OKP", crv: "Ed25519", d: seed.toString("base64url"), x: pub.toString("base64url") },
    format: "jwk",
  });
  if (!rawPublicKey(createPublicKey(key)).equals(pub)) throw new InvalidInputError(`secret key '${name}' has a wrong public half`);
  return { name, key };
}

/** Parses a Nix public key (`name:base64(32 bytes)`). */
export function parsePublicKey(text: string): NixKey {
  const { name, raw } = splitKey(text, 32, "public");
  return { name, key: publicKeyFromRaw(raw) };
}

/** The public key text matching a secret key text. */
export function publicKeyOf(secretKey: string): string {
  const { name, key } = parseSecretKey(secretKey);
  return `${name}:${rawPublicKey(createPublicKey(key)).toString("base64")}`;
}

/** Generates a new key pair in Nix's text format. */
export function generateKeyPair(name: string): NixKeyPair {
  if (!name || name.includes(":") || /\s/.test(name)) throw new InvalidInputError(`bad key name '${name}'`);
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const seed = Buffer.from(privateKey.export({ format: "jwk" }).d as string, "base64url");
  const pub = rawPublicKey(publicKey);
  return { secretKey: `${name}:${Buffer.concat([seed, pub]).toString("base64")}`, publicKey: `${name}:${pub.toString("base64")}` };
}

/** The string Nix signs for a store path: `1;<path>;<narHash>;<narSize>;<sorted,refs>`. */
export function fingerprint(storePath: string, narHash: string, narSize: number, refsFullPaths: string[]): string {
  return `1;${storePath};${normalizeSha256(narHash)};${narSize};${[...refsFullPaths].sort().join(",")}`;
}

/** Fingerprint of a narinfo. */
export function narInfoFingerprint(info: NarInfo): string {
  return fingerprint(info.storePath, info.narHash, info.narSize, referencePaths(info));
}

/** Signs a fingerprint (or any message), giving a `name:base64(sig)` signature. */
export function signFingerprint(fp: string | Buffer, secretKey: string | NixKey): string {
  const sk = typeof secretKey === "string" ? parseSecretKey(secretKey) : secretKey;
  return `${sk.name}:${sign(null, Buffer.from(fp), sk.key).toString("base64")}`;
}

/** Returns `info` with a signature by `secretKey` added (replacing an older one by the same key name). */
export function signNarInfo(info: NarInfo, secretKey: string | NixKey): NarInfo {
  const sk = typeof secretKey === "string" ? parseSecretKey(secretKey) : secretKey;
  return withSignature(info, signFingerprint(narInfoFingerprint(info), sk));
}

/** Returns `info` with `sig` (`name:base64`, of its fingerprint) added, replacing an older one by the same key name. */
export function withSignature(info: NarInfo, sig: string): NarInfo {
  const name = sig.slice(0, sig.indexOf(":") + 1);
  return { ...info, sigs: [...info.sigs.filter((s) => !s.startsWith(name)), sig] };
}

/** True if any of `info`'s signatures is by a trusted key and valid for its fingerprint. */
export function verifyNarInfo(info: NarInfo, trustedPublicKeys: (string | NixKey)[]): boolean {
  return verifySignatures(Buffer.from(narInfoFingerprint(info)), info.sigs, trustedPublicKeys);
}

/** True if any `name:base64(sig)` in `sigs` is by a trusted key (matched by name) and valid for `data`. */
export function verifySignatures(data: Buffer, sigs: readonly string[], trustedPublicKeys: (string | NixKey)[]): boolean {
  const keys = new Map<string, KeyObject[]>();
  for (const k of trustedPublicKeys) {
    const pk = typeof k === "string" ? parsePublicKey(k) : k;
    keys.set(pk.name, [...(keys.get(pk.name) ?? []), pk.key]);
  }
  for (const sig of sigs) {
    const colon = sig.indexOf(":");
    const candidates = colon > 0 ? keys.get(sig.slice(0, colon)) : undefined;
    if (!candidates) continue;
    const raw = Buffer.from(sig.slice(colon + 1), "base64");
    if (raw.length !== 64) continue;
    if (candidates.some((key) => verify(null, data, key, raw))) return true;
  }
  return false;
}
