import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { compressHash, isNix32, nix32Decode, nix32Encode, nix32Length } from "./nix32.js";

// Vectors produced by Nix 2.8: `nix-hash --type <t> --to-base32 <hex>`.
const VECTORS: [string, string][] = [
  ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"],
  ["2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic"],
  ["0000000000000000000000000000000000000000000000000000000000000001", "0080000000000000000000000000000000000000000000000000"],
  ["ff00000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000000000000000000000000000007z"],
  ["0102030405060708090a0b0c0d0e0f1011121314", "2h9i448h1w70s30b184hh1q60l2060h1"],
  ["00112233445566778899aabbccddeeff", "7zxvfwrfxak647frjm8hrj4480"],
];

describe("nix32", () => {
  it.each(VECTORS)("encodes and decodes %s like Nix", (hex, text) => {
    const bytes = Buffer.from(hex, "hex");
    expect(nix32Encode(bytes)).toBe(text);
    expect(nix32Decode(text, bytes.length).toString("hex")).toBe(hex);
  });

  it("has the lengths Nix uses", () => {
    expect(nix32Length(20)).toBe(32);
    expect(nix32Length(32)).toBe(52);
    expect(nix32Length(16)).toBe(26);
  });

  it("round-trips random data of many lengths", () => {
    for (let len = 1; len < 70; len++) {
      const b = createHash("sha512").update(String(len)).digest().subarray(0, Math.min(len, 64));
      expect(nix32Decode(nix32Encode(b), b.length).equals(b)).toBe(true);
    }
  });

  it("rejects bad characters, wrong lengths and excess bits", () => {
    expect(() => nix32Decode("e".repeat(52), 32)).toThrow(InvalidInputError); // 'e' is not in the alphabet
    expect(() => nix32Decode("0".repeat(51), 32)).toThrow(InvalidInputError);
    // 52 chars carry 260 bits; the top 4 must be zero for a 256-bit hash.
    expect(() => nix32Decode("z" + "0".repeat(51), 32)).toThrow(/excess bits/);
    expect(isNix32("1" + "0".repeat(51), 32)).toBe(true);
    expect(isNix32("u" + "0".repeat(51), 32)).toBe(false);
  });

  it("XOR-folds hashes", () => {
    const h = Buffer.from([1, 2, 3, 4, 5, 6]);
    expect([...compressHash(h, 4)]).toEqual([1 ^ 5, 2 ^ 6, 3, 4]);
    expect([...compressHash(h, 8)]).toEqual([1, 2, 3, 4, 5, 6, 0, 0]);
  });
});
