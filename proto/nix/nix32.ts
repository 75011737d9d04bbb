// Nix's base-32: its own alphabet (no e, o, u, t) and an odd bit order in which
// the LAST character holds the lowest bits of the FIRST byte. Pure functions.

import { InvalidInputError } from "../errors.js";

/** The 32 characters Nix uses, in digit order. */
export const NIX32_ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz";

/** Digit of each character code (-1: not in the alphabet); a table, as every narinfo read decodes two hashes. */
const DIGIT_OF = new Int8Array(128).fill(-1);
for (let i = 0; i < NIX32_ALPHABET.length; i++) DIGIT_OF[NIX32_ALPHABET.charCodeAt(i)] = i;

/** Length of the nix32 text for `bytes` bytes of hash. */
export function nix32Length(bytes: number): number {
  return Math.floor((bytes * 8 - 1) / 5) + 1;
}

/** Encodes bytes as Nix base-32 (e.g. 20 bytes -> 32 chars, 32 bytes -> 52 chars). */
export function nix32Encode(bytes: Uint8Array): string {
  const len = nix32Length(bytes.length);
  let out = "";
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const hi = i + 1 < bytes.length ? bytes[i + 1] << (8 - j) : 0;
    out += NIX32_ALPHABET[((bytes[i] >> j) | hi) & 0x1f];
  }
  return out;
}

/** Decodes Nix base-32 text into `byteLength` bytes; throws InvalidInputError on bad input. */
export function nix32Decode(text: string, byteLength: number): Buffer {
  if (text.length !== nix32Length(byteLength)) {
    throw new InvalidInputError(`nix32 string of length ${text.length} cannot encode ${byteLength} bytes`);
  }
  const out = Buffer.alloc(byteLength);
  for (let n = 0; n < text.length; n++) {
    const code = text.charCodeAt(text.length - n - 1);
    const digit = code < 128 ? DIGIT_OF[code] : -1;
    if (digit < 0) throw new InvalidInputError(`invalid nix32 character in '${text}'`);
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    out[i] |= (digit << j) & 0xff;
    const carry = digit >> (8 - j);
    if (i + 1 < byteLength) out[i + 1] |= carry;
    // Bits beyond the last byte must be zero, or two texts would decode alike.
    else if (carry) throw new InvalidInputError(`nix32 string '${text}' has excess bits`);
  }
  return out;
}

/** True if `text` is a valid nix32 encoding of `byteLength` bytes. */
export function isNix32(text: string, byteLength: number): boolean {
  try {
    nix32Decode(text, byteLength);
    return true;
  } catch {
    return false;
  }
}

/** XOR-folds a hash to `size` bytes, as Nix does to make store path hashes (size 20). */
export function compressHash(hash: Uint8Array, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < hash.length; i++) out[i % size] ^= hash[i];
  return out;
}
