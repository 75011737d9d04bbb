import { describe, expect, it } from "vitest";
import { SeededRandom } from "../core/clock.js";
import { InvalidInputError } from "../core/errors.js";
import { mkNode } from "../core/test-support.js";
import { durationOn, exhaustionTimeMs, paramsFromJson, peakOn, WorkloadModel } from "./workload.js";
import { DEFAULT_WORKLOAD_PARAMS } from "./workload-params.js";

const MB = 2 ** 20;

describe("workload model", () => {
  it("gives the same profile for the same seed and pname, in any model instance and node", () => {
    const a = new WorkloadModel().profile(mkNode("libfoo", [], { pname: "libfoo" }));
    const b = new WorkloadModel().profile(mkNode("libfoo-2.0", [], { pname: "libfoo" }));
    expect(b).toEqual(a);
    const other = new WorkloadModel({ ...DEFAULT_WORKLOAD_PARAMS, seed: 99 }).profile(mkNode("libfoo", [], { pname: "libfoo" }));
    expect(other.singleCoreMs).not.toBe(a.singleCoreMs);
  });

  it("uses the anchored numbers for named packages", () => {
    const gcc = new WorkloadModel().profile(mkNode("gcc-9.3.0", [], { pname: "gcc" }));
    expect(gcc.class).toBe("named");
    expect(gcc.singleCoreMs).toBe(660 * 60_000);
    const aws = new WorkloadModel().profile(mkNode("aws-sdk-cpp-1.7", [], { pname: "aws-sdk-cpp" }));
    expect(aws.perCoreBytes).toBe(1536 * MB);
  });

  it("makes fetches short and light, and big-parallel long and hungry", () => {
    const m = new WorkloadModel();
    const fetch = m.profile(mkNode("src.tar.gz", [], { pname: "src.tar.gz", fixedOutput: true, system: "builtin" }));
    expect(fetch.class).toBe("fetch");
    expect(fetch.singleCoreMs).toBeLessThanOrEqual(120_000);
    expect(peakOn(fetch, 4)).toBeLessThanOrEqual(64 * MB);
    const big = m.profile(mkNode("mystery-1", [], { pname: "mystery", requiredSystemFeatures: ["big-parallel"] }));
    expect(big.class).toBe("big-parallel");
    expect(durationOn(big, 2)).toBeGreaterThan(2 * 3_600_000);
    expect(peakOn(big, 1)).toBeGreaterThan(1024 * MB);
  });

  it("has parallel efficiency below 1, and memory that grows with cores only for parallel builds", () => {
    const m = new WorkloadModel();
    const par = m.profile(mkNode("par-1", [], { pname: "par", enableParallelBuilding: true }));
    expect(durationOn(par, 2)).toBeLessThan(durationOn(par, 1));
    expect(durationOn(par, 2)).toBeGreaterThan(durationOn(par, 1) / 2);
    expect(peakOn(par, 4)).toBeGreaterThan(peakOn(par, 1));
    const ser = m.profile(mkNode("ser-1", [], { pname: "ser", enableParallelBuilding: false }));
    expect(durationOn(ser, 4)).toBe(durationOn(ser, 1));
    expect(peakOn(ser, 4)).toBe(peakOn(ser, 1));
  });

  it("draws the same attempt from the same generator state", () => {
    const m = new WorkloadModel();
    const node = mkNode("gcc-9.3.0", [], { pname: "gcc" });
    expect(m.attempt(node, 2, 1, new SeededRandom(5))).toEqual(m.attempt(node, 2, 1, new SeededRandom(5)));
    // Granted cores beyond the machine's raise memory but not speed.
    const one = m.attempt(node, 1, 1, new SeededRandom(5));
    const four = m.attempt(node, 4, 1, new SeededRandom(5));
    expect(four.durationMs).toBe(one.durationMs);
    expect(four.peakBytes).toBeGreaterThan(one.peakBytes);
  });

  it("kills a build over its limit part-way, in proportion to the limit", () => {
    expect(exhaustionTimeMs({ durationMs: 1000, peakBytes: 100 }, 0.5, 100)).toBeNull();
    expect(exhaustionTimeMs({ durationMs: 1000, peakBytes: 200 }, 0.5, 100)).toBe(250);
  });

  it("lays a model file over the defaults and validates it", () => {
    const p = paramsFromJson({ seed: 7, packages: { gcc: { singleCoreMin: 100 }, newpkg: { baseMB: 900 } } });
    expect(p.seed).toBe(7);
    expect(p.packages.gcc.singleCoreMin).toBe(100);
    expect(p.packages.gcc.baseMB).toBe(DEFAULT_WORKLOAD_PARAMS.packages.gcc.baseMB);
    expect(p.packages.newpkg.baseMB).toBe(900);
    expect(p.packages.binutils).toEqual(DEFAULT_WORKLOAD_PARAMS.packages.binutils);
    expect(() => paramsFromJson({ packages: { gcc: { singleCoreMin: -1 } } })).toThrow(InvalidInputError);
    expect(() => paramsFromJson([1])).toThrow(InvalidInputError);
  });
});
