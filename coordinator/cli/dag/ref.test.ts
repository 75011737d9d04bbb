import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../../core/errors.js";
import { parseRef, refSourceLabel } from "./ref.js";

describe("parseRef", () => {
  it("reads nixpkgs attributes", () => {
    expect(parseRef("nixpkgs#gcc")).toEqual({ kind: "nixpkgs", attrPath: "gcc", text: "nixpkgs#gcc" });
    expect(parseRef("nixpkgs#python3Packages.requests").attrPath).toBe("python3Packages.requests");
    expect(parseRef("nixpkgs#texlive.combined.scheme-full").attrPath).toBe("texlive.combined.scheme-full");
  });

  it("reads file references, with and without an attribute", () => {
    expect(parseRef("./x.nix#demo")).toEqual({ kind: "file", file: "./x.nix", attrPath: "demo", text: "./x.nix#demo" });
    expect(parseRef("/abs/file.nix#")).toMatchObject({ kind: "file", file: "/abs/file.nix", attrPath: "" });
    expect(parseRef("./x.nix")).toMatchObject({ kind: "file", file: "./x.nix", attrPath: "" });
    expect(parseRef("../dir#a.b")).toMatchObject({ kind: "file", file: "../dir", attrPath: "a.b" });
    expect(parseRef("demo.nix#a")).toMatchObject({ kind: "file", file: "demo.nix" });
    expect(parseRef('./x.nix#a."b-c"').attrPath).toBe('a."b-c"');
  });

  it("labels the source for messages", () => {
    expect(refSourceLabel(parseRef("./x.nix#a"))).toBe("./x.nix");
    expect(refSourceLabel(parseRef("nixpkgs#a"))).toBe("nixpkgs");
  });

  const bad: [string, RegExp][] = [
    ["nixpkgs#", /names no attribute/],
    ["nixpkgs", /names no attribute/],
    ["hello", /cannot understand reference 'hello'/],
    ["github:NixOS/nixpkgs#hello", /cannot understand reference/],
    ["./x.nix#a..b", /bad attribute path 'a\.\.b'/],
    ["./x.nix#a b", /bad attribute path/],
    ["./x.nix#.a", /bad attribute path/],
  ];
  for (const [text, msg] of bad) {
    it(`rejects ${JSON.stringify(text)}`, () => {
      expect(() => parseRef(text)).toThrow(InvalidInputError);
      expect(() => parseRef(text)).toThrow(msg);
    });
  }
});
