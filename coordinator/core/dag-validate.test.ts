import { describe, expect, it } from "vitest";
import { drvHashPart, validateSubmission } from "./dag-validate.js";
import { InvalidInputError } from "./errors.js";
import { drvPathOf, mkNode, mkSubmission } from "./test-support.js";
import type { DrvNode } from "./types.js";

function check(nodes: DrvNode[], roots: string[], jobId = "j1"): () => unknown {
  return () => validateSubmission(mkSubmission(jobId, nodes, roots));
}

describe("validateSubmission", () => {
  it("orders a valid DAG inputs first", () => {
    const v = validateSubmission(mkSubmission("j1", [mkNode("top", ["a", "b"]), mkNode("a", ["b"]), mkNode("b")], ["top"]));
    expect(v.order).toEqual([drvPathOf("b"), drvPathOf("a"), drvPathOf("top")]);
  });

  const cases: [string, () => unknown, RegExp][] = [
    ["missing input", check([mkNode("top", ["gone"])], ["top"]), /input .*gone\.drv is not among the submitted nodes/],
    ["cycle", check([mkNode("a", ["b"]), mkNode("b", ["a"]), mkNode("top", ["a"])], ["top"]), /dependency cycle/],
    ["self input", check([mkNode("a", ["a"])], ["a"]), /depends on itself/],
    ["unknown root", check([mkNode("a")], ["zzz"]), /root .*zzz\.drv is not among/],
    ["no roots", check([mkNode("a")], []), /no roots/],
    ["no nodes", check([], ["a"]), /no nodes/],
    ["no outputs", check([mkNode("a", [], { outputs: [] })], ["a"]), /has no outputs/],
    ["unknown input output", check([mkNode("b"), mkNode("a", [["b", ["dev"]]])], ["a"]), /uses output dev that/],
    ["uses no output", check([mkNode("b"), mkNode("a", [["b", []]])], ["a"]), /uses no output/],
    ["empty system", check([mkNode("a", [], { system: "" })], ["a"]), /system is empty/],
    ["bad drv path", check([{ ...mkNode("a"), drvPath: "/tmp/nix/store/a.drv" }], ["a"]), /not a store path/],
    ["duplicate node", check([mkNode("a"), mkNode("a")], ["a"]), /submitted twice/],
    ["bad job id", check([mkNode("a")], ["a"], "a.b c"), /job id/],
  ];
  for (const [name, run, message] of cases) {
    it(`rejects ${name}`, () => {
      expect(run).toThrow(InvalidInputError);
      expect(run).toThrow(message);
    });
  }

  it("extracts the 32-char hash part used as store key", () => {
    expect(drvHashPart("/tmp/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x-1.drv")).toBe("0123456789abcdfghijklmnpqrsvwxyz");
    expect(drvHashPart("/tmp/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x.drv")).toBeNull();
    expect(drvHashPart("/0123456789abcdfghijklmnpqrsvwxyz-x.drv")).toBeNull();
    expect(drvHashPart("/tmp/nix/store/0123456789abcdfghijklmnpqrsvwxyz-x")).toBeNull();
  });
});

describe("validateSubmission duplicates", () => {
  it("rejects an input listed twice", () => {
    const n = mkNode("a", ["b"]);
    n.inputDrvs.push({ drvPath: drvPathOf("b"), outputs: ["out"] });
    expect(check([mkNode("b"), n], ["a"])).toThrow(/lists input .* twice/);
  });
});
