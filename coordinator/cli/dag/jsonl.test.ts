import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidInputError } from "../../core/errors.js";
import { BUILTIN_SYSTEM, type DrvNode } from "../../core/types.js";
import { checkClosedAcyclic } from "../../../test/fixtures/dag-check.js";
import { cutClosure, loadJsonlDag, parseJsonlNode } from "./jsonl.js";

const FIXTURES = join(__dirname, "../../../test/fixtures/dags");
const GCC_ROOT = "/nix/store/flz0r0b1livgxp5jny9dldfx47a0az01-gcc-wrapper-9.3.0.drv";
const CHROMIUM_ROOT = "/nix/store/c55b72kmfdivfi46xk59qk6y5wx08a1l-chromium-84.0.4147.89.drv";
const GLIBC_MULTI_ROOT = "/nix/store/m91jk0mmihd3gnfgbkmjz6mzjab2ldyw-glibc-multi-2.31.drv";

/** Nodes that use some but not all outputs of a multi-output input. */
function partialUsers(nodes: DrvNode[]): DrvNode[] {
  const byPath = new Map(nodes.map((n) => [n.drvPath, n]));
  return nodes.filter((n) =>
    n.inputDrvs.some((i) => Object.keys(byPath.get(i.drvPath)!.outputs).length > i.outputs.length),
  );
}

describe("nixpkgs 20.09 fixtures", () => {
  let gcc: DrvNode[];
  let chromium: DrvNode[];
  let glibcMulti: DrvNode[];
  beforeAll(async () => {
    [gcc, chromium, glibcMulti] = await Promise.all([
      loadJsonlDag(join(FIXTURES, "gcc.jsonl")),
      loadJsonlDag(join(FIXTURES, "chromium.jsonl.xz")),
      loadJsonlDag(join(FIXTURES, "glibc-multi.jsonl.xz")),
    ]);
  });

  it("gcc: 135 drvs, closed, acyclic, with builtin fetches, FODs, preferLocalBuild and partial output use", () => {
    expect(gcc).toHaveLength(135);
    expect(checkClosedAcyclic(gcc)).toBeGreaterThan(10);
    expect(cutClosure(gcc, [GCC_ROOT])).toHaveLength(135);
    expect(gcc.find((n) => n.drvPath === GCC_ROOT)).toMatchObject({
      name: "gcc-wrapper-9.3.0",
      pname: "gcc-wrapper",
      version: "9.3.0",
      system: "x86_64-linux",
      fixedOutput: false,
      inputSrcs: [],
    });
    const builtin = gcc.filter((n) => n.system === BUILTIN_SYSTEM);
    expect(builtin.length).toBe(64);
    expect(builtin.every((n) => n.fixedOutput)).toBe(true);
    expect(gcc.filter((n) => n.fixedOutput)).toHaveLength(64);
    expect(gcc.some((n) => n.preferLocalBuild)).toBe(true);
    expect(gcc.some((n) => Object.keys(n.outputs).length > 1)).toBe(true);
    expect(partialUsers(gcc).length).toBeGreaterThan(0);
  });

  it("chromium: 1,344 drvs, closed, acyclic, with big-parallel and allowSubstitutes = false", () => {
    expect(chromium).toHaveLength(1344);
    checkClosedAcyclic(chromium);
    expect(cutClosure(chromium, [CHROMIUM_ROOT])).toHaveLength(1344);
    const big = chromium.filter((n) => n.requiredSystemFeatures.includes("big-parallel")).map((n) => n.pname);
    expect(big.sort()).toEqual(["chromium-unwrapped", "llvm", "llvm", "rustc"]);
    expect(chromium.filter((n) => !n.allowSubstitutes)).toHaveLength(20);
    expect(chromium.filter((n) => n.fixedOutput)).toHaveLength(670);
    expect(chromium.filter((n) => n.system === BUILTIN_SYSTEM)).toHaveLength(84);
    expect(chromium.filter((n) => n.preferLocalBuild)).toHaveLength(707);
    expect(chromium.some((n) => n.enableParallelBuilding)).toBe(true);
    expect(partialUsers(chromium)).toHaveLength(1218);
  });

  it("glibc-multi: the i686-linux sample (gcc and chromium have none)", () => {
    expect(glibcMulti).toHaveLength(208);
    checkClosedAcyclic(glibcMulti);
    expect(gcc.concat(chromium).some((n) => n.system === "i686-linux")).toBe(false);
    const systems = new Set(glibcMulti.map((n) => n.system));
    expect([...systems].sort()).toEqual([BUILTIN_SYSTEM, "i686-linux", "x86_64-linux"]);
    const root = glibcMulti.find((n) => n.drvPath === GLIBC_MULTI_ROOT)!;
    const rootInputs = new Map(glibcMulti.map((n) => [n.drvPath, n.system]));
    expect(root.inputDrvs.some((i) => rootInputs.get(i.drvPath) === "i686-linux")).toBe(true);
  });

  it("cutClosure cuts a sub-DAG and rejects an open one", () => {
    const stdenv = chromium.find((n) => n.name === "stdenv-linux" && n.inputDrvs.length > 5)!;
    const sub = cutClosure(chromium, [stdenv.drvPath]);
    expect(sub.length).toBeGreaterThan(50);
    expect(sub.length).toBeLessThan(1344);
    checkClosedAcyclic(sub);
    const both = cutClosure(chromium, [stdenv.drvPath, CHROMIUM_ROOT]);
    expect(both).toHaveLength(1344);
    const open = chromium.filter((n) => n.drvPath !== stdenv.drvPath);
    expect(() => cutClosure(open, [CHROMIUM_ROOT])).toThrow(/DAG is not closed: .*stdenv-linux\.drv \(needed by /);
    expect(() => cutClosure(gcc, ["/nix/store/x-missing.drv"])).toThrow(InvalidInputError);
  });
});

describe("parseJsonlNode / loadJsonlDag errors", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "farm-jsonl-"));
  });
  afterAll(() => rm(dir, { recursive: true }));

  const good = { drv: "/s/a.drv", name: "a-1", system: "x86_64-linux", outputs: { out: "/s/a" }, input_drvs: {} };

  it("fills defaults and splits names", () => {
    expect(parseJsonlNode(JSON.stringify(good))).toMatchObject({
      pname: "a",
      version: "1",
      allowSubstitutes: true,
      preferLocalBuild: false,
      requiredSystemFeatures: [],
    });
  });

  it("rejects bad lines with their location", async () => {
    expect(() => parseJsonlNode("{", "f:3")).toThrow("f:3: not JSON");
    expect(() => parseJsonlNode(JSON.stringify({ ...good, outputs: [] }), "f:1")).toThrow("f:1: field outputs is not an object");
    expect(() => parseJsonlNode(JSON.stringify({ ...good, input_drvs: { "/s/b.drv": "out" } }))).toThrow(/input_drvs/);
    expect(() => parseJsonlNode(JSON.stringify({ ...good, fixed_output: "yes" }))).toThrow(/fixed_output is not a boolean/);
    const file = join(dir, "bad.jsonl");
    await writeFile(file, `${JSON.stringify(good)}\n\n${JSON.stringify({ ...good, drv: 1 })}\n`);
    await expect(loadJsonlDag(file)).rejects.toThrow(`${file}:3: field drv is not a string`);
  });

  it("reports unreadable files", async () => {
    await expect(loadJsonlDag(join(dir, "missing.jsonl"))).rejects.toThrow(/^cannot read DAG file .*missing\.jsonl: ENOENT/);
    await expect(loadJsonlDag(join(dir, "missing.jsonl"))).rejects.toBeInstanceOf(InvalidInputError);
    await expect(loadJsonlDag(join(dir, "missing.jsonl.xz"))).rejects.toThrow(/xz -dc .*missing\.jsonl\.xz failed/);
  });
});
