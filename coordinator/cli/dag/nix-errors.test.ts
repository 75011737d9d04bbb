import { describe, expect, it } from "vitest";
import { EvaluationError, UnknownAttributeError, firstErrorLine, nixEvalError } from "./nix-errors.js";

describe("nixEvalError", () => {
  it("turns Nix 2.8's missing attribute message into one line", () => {
    const e = nixEvalError("error: attribute 'foo' in selection path 'foo' not found\n       Did you mean f?\n", "./x.nix", "foo");
    expect(e).toBeInstanceOf(UnknownAttributeError);
    expect(e.message).toBe("unknown attribute 'foo' in ./x.nix (did you mean f?)");
  });

  it("names the selection path when a nested attribute is missing", () => {
    const e = nixEvalError("error: attribute 'foo' in selection path 'a.foo.bar' not found\n", "nixpkgs", "a.foo.bar");
    expect(e.message).toBe("unknown attribute 'foo' in nixpkgs (selecting 'a.foo.bar')");
  });

  it("understands the older 'attribute ... missing' wording", () => {
    expect(nixEvalError("error: attribute 'foo' missing\n", "./x.nix", "foo").message).toBe("unknown attribute 'foo' in ./x.nix");
  });

  it("keeps the first error line of other failures, without colours", () => {
    const stderr = "warning: something\n\x1b[31;1merror:\x1b[0m undefined variable 'y'\n\n       at /t/u.nix:1:7:\n";
    const e = nixEvalError(stderr, "./u.nix", "x");
    expect(e).toBeInstanceOf(EvaluationError);
    expect(e.message).toBe("evaluation of ./u.nix#x failed: undefined variable 'y'");
    expect((e.cause as Error).message).toContain("at /t/u.nix:1:7");
  });
});

describe("firstErrorLine", () => {
  it("takes the next line when the error line is bare", () => {
    expect(firstErrorLine("error:\n   something broke\n")).toBe("something broke");
  });
  it("falls back to the first non-warning line", () => {
    expect(firstErrorLine("warning: w\nSegmentation fault\n")).toBe("Segmentation fault");
    expect(firstErrorLine("")).toMatch(/unknown error/);
  });
});
