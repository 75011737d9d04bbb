import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { baseName, hashPart, isStoreBaseName, isStorePath, makeStorePath, parseStorePath, storeDirOf } from "./store-path.js";

const SD = "/tmp/nix/store";
const P = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo`;

describe("store paths", () => {
  it("computes text store paths exactly like Nix (builtins.toFile \"foo\" \"bar\")", () => {
    const inner = createHash("sha256").update("bar").digest();
    expect(makeStorePath("text", inner, "foo", "/nix/store")).toBe("/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo");
    expect(makeStorePath("text", inner, "foo", SD)).toBe(P);
  });

  it("parses valid paths", () => {
    expect(parseStorePath(P, SD)).toEqual({ storeDir: SD, hashPart: "ya13ysp6mn5s1vkz1023zgghzvb2jlsb", name: "foo", baseName: "ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo" });
    expect(hashPart(P)).toBe("ya13ysp6mn5s1vkz1023zgghzvb2jlsb");
    expect(baseName(P)).toBe("ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo");
    expect(storeDirOf(P)).toBe(SD);
    expect(isStorePath(`${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-a+b-1.0_x?=y.drv`, SD)).toBe(true);
  });

  it.each([
    ["other store dir", "/nix/store/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo"],
    ["short hash", `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jls-foo`],
    ["bad hash char", `${SD}/ea13ysp6mn5s1vkz1023zgghzvb2jlsb-foo`],
    ["empty name", `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-`],
    ["dot name", `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-.foo`],
    ["slash in name", `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo/bin`],
    ["space in name", `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-f o`],
    ["no dash", `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsbxfoo`],
    ["too long", `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-${"a".repeat(212)}`],
    ["nested", `${SD}/x/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo`],
  ])("rejects %s", (_label, path) => {
    expect(() => parseStorePath(path, SD)).toThrow(InvalidInputError);
  });

  it("validates basenames and store dirs", () => {
    expect(isStoreBaseName("ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo")).toBe(true);
    expect(isStoreBaseName("ya13ysp6mn5s1vkz1023zgghzvb2jlsb")).toBe(false);
    expect(() => parseStorePath(P, "/tmp/nix/store/")).toThrow(/store dir/);
    expect(() => parseStorePath(P, "tmp/nix/store")).toThrow(/store dir/);
    expect(() => hashPart("/tmp/x")).toThrow(InvalidInputError);
  });
});
