import { describe, expect, it } from "vitest";
import { InvalidInputError } from "./errors.js";
import { DEFAULT_HEAVY_PACKAGES, HeavyTable, loadHeavyTable } from "./heavy-packages.js";

const entry = { pname: "gcc", oneCoreMinutes: 900, parallelFraction: 0.8, baseMiB: 700, perCoreMiB: 300, diskGiB: 7, note: "measured on our workers" };

describe("heavy-packages table", () => {
  it("every built-in entry says where its numbers come from and passes validation", () => {
    for (const e of DEFAULT_HEAVY_PACKAGES) expect(e.note).toMatch(/outside source|assumption/);
    expect(loadHeavyTable([...DEFAULT_HEAVY_PACKAGES], [])).toHaveLength(DEFAULT_HEAVY_PACKAGES.length);
    const names = DEFAULT_HEAVY_PACKAGES.map((e) => e.pname);
    for (const p of ["gcc", "binutils", "llvm", "nodejs", "v8", "aws-sdk-cpp", "rustc", "ghc", "chromium*", "firefox*", "libreoffice*", "qtwebengine", "linux"]) {
      expect(names).toContain(p);
    }
  });

  it("an override file replaces same-pname entries and keeps the rest", () => {
    const t = loadHeavyTable(JSON.stringify([entry, { ...entry, pname: "mything*", note: undefined }]));
    expect(t.find((e) => e.pname === "gcc")).toEqual(entry);
    expect(t.find((e) => e.pname === "llvm")).toBeDefined();
    expect(t.find((e) => e.pname === "mything*")!.note).toBe("operator override");
    expect(t).toHaveLength(DEFAULT_HEAVY_PACKAGES.length + 1);
  });

  it("`replace: true` drops the built-in table", () => {
    expect(loadHeavyTable({ replace: true, packages: [entry] })).toEqual([entry]);
    expect(loadHeavyTable({ packages: [entry] })).toHaveLength(DEFAULT_HEAVY_PACKAGES.length);
  });

  it("rejects bad files with a message naming the entry and field", () => {
    const bad = (v: unknown) => () => loadHeavyTable(v);
    expect(bad("{not json")).toThrow(InvalidInputError);
    expect(bad("{not json")).toThrow(/not JSON/);
    expect(bad({ packages: "x" })).toThrow(/expected a list/);
    expect(bad({ pkgs: [] })).toThrow(/unknown field 'pkgs'/);
    expect(bad([{ ...entry, baseMiB: -1 }])).toThrow(/entry 0 \(gcc\): baseMiB must be a number/);
    expect(bad([entry, { ...entry, parallelFraction: 1.5 }])).toThrow(/entry 1 .*parallelFraction/);
    expect(bad([{ ...entry, pname: "a*b" }])).toThrow(/pname/);
    expect(bad([{ ...entry, memory: 5 }])).toThrow(/unknown field 'memory'/);
  });

  it("looks up exact names before the longest matching prefix", () => {
    const t = new HeavyTable([
      { ...entry, pname: "qt*", note: "qt" },
      { ...entry, pname: "qtwebengine*", note: "long" },
      { ...entry, pname: "qtbase", note: "exact" },
    ]);
    expect(t.lookup("qtbase")!.note).toBe("exact");
    expect(t.lookup("qtwebengine-unwrapped")!.note).toBe("long");
    expect(t.lookup("qtsvg")!.note).toBe("qt");
    expect(t.lookup("hello")).toBeUndefined();
  });
});
