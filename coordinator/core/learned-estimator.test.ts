import { describe, expect, it } from "vitest";
import { durationAt, memoryAt, type BuildObservation } from "./estimator.js";
import { DEFAULT_PRIORS } from "./estimate-priors.js";
import { LearnedEstimator, checkLearned, estimateKey, estimateKeyOf, estimateStoreKey, versionFamily } from "./learned-estimator.js";
import { mkNode } from "./test-support.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const MIN = 60_000;

const pkg = (pname: string, version: string, opts: Parameters<typeof mkNode>[2] = {}) =>
  mkNode(`${pname}-${version}`, [], { pname, version, ...opts });
const ok = (cores: number, peakMiB: number, durationMs: number, extra: Partial<BuildObservation> = {}): BuildObservation => ({
  outcome: "succeeded",
  cores,
  peakMemoryBytes: peakMiB * MiB,
  durationMs,
  ...extra,
});

describe("estimate keys", () => {
  it("key by pname and major version: gcc-10.3.0 ~ gcc-10.2.0, not gcc-9", () => {
    expect(estimateKey("gcc", "10.3.0")).toBe("gcc@10");
    expect(estimateKey("gcc", "10.2.0")).toBe("gcc@10");
    expect(estimateKey("gcc", "9.3.0")).toBe("gcc@9");
    expect(estimateKey("foo", "")).toBe("foo");
    expect(versionFamily("0.11.2")).toBe("0.11");
    expect(versionFamily("4.4-p23")).toBe("4");
    expect(versionFamily("unstable-2021-05-01")).toBe("2021");
    expect(versionFamily("git")).toBe("git");
  });

  it("learning on gcc-10.2.0 informs gcc-10.3.0 but not gcc-9.3.0", () => {
    const e = new LearnedEstimator();
    e.observe(pkg("gcc", "10.2.0"), ok(2, 900, 300 * MIN));
    expect(e.estimate(pkg("gcc", "10.3.0")).model!.source).toBe("history");
    expect(e.estimate(pkg("gcc", "9.3.0")).model!.source).toBe("heavy-table");
  });

  it("a fetch learns under its own key: perl's tarball never becomes perl's build history", () => {
    const est = new LearnedEstimator();
    const tarball = pkg("perl", "5.30.3.tar.gz", { fixedOutput: true });
    const perl = pkg("perl", "5.30.3");
    expect(estimateKeyOf(tarball)).toBe("fetch:perl@5");
    expect(estimateKeyOf(perl)).toBe("perl@5");
    expect(est.observe(tarball, ok(1, 28, 14_000))?.key).toBe("fetch:perl@5");
    expect(est.estimate(perl).model!.measured).toBe(false);
    expect(est.estimate(tarball).model!).toMatchObject({ measured: true, source: "history" });
    expect(estimateStoreKey("fetch:perl@5")).toBe("fetch=3aperl=405");
  });

  it("store keys are NATS-safe and distinct", () => {
    expect(estimateStoreKey("gcc@10")).toBe("gcc=4010");
    expect(estimateStoreKey("libstdc++@6")).toBe("libstdc=2b=2b=406");
    expect(estimateStoreKey("a.b")).not.toBe(estimateStoreKey("a_b"));
    expect(estimateStoreKey("gtk+@3")).toMatch(/^[A-Za-z0-9_=-]+$/);
  });
});

describe("estimates without history", () => {
  const e = new LearnedEstimator();

  it("heavy table first: gcc ~660 min on one core, ~1 GB at 2 cores", () => {
    const m = e.estimate(pkg("gcc", "10.3.0")).model!;
    expect(m.source).toBe("heavy-table");
    expect(durationAt(m, 1)).toBe(660 * MIN);
    expect(memoryAt(m, 2)).toBe(1000 * MiB);
    expect(durationAt(m, 4)).toBeLessThan(durationAt(m, 2));
    expect(durationAt(m, 4)).toBeGreaterThan(660 * MIN / 4); // parallel efficiency < 1
    // Prefix entries: chromium-unwrapped is chromium.
    expect(e.estimate(pkg("chromium-unwrapped", "84.0")).model!.source).toBe("heavy-table");
    expect(e.estimate(pkg("gcc-wrapper", "10.3.0")).model!.source).toBe("default");
  });

  it("then big-parallel, then fetches and preferLocalBuild as tiny, then the default", () => {
    const big = e.estimate(pkg("somebig", "1", { requiredSystemFeatures: ["big-parallel"] })).model!;
    const fetch = e.estimate(pkg("src", "1", { fixedOutput: true })).model!;
    const local = e.estimate(pkg("conf", "1", { preferLocalBuild: true })).model!;
    const plain = e.estimate(pkg("hello", "2.10")).model!;
    expect([big.source, fetch.source, local.source, plain.source]).toEqual(["big-parallel", "fetch", "local", "default"]);
    expect(memoryAt(big, 1)).toBeGreaterThan(memoryAt(plain, 1));
    expect(durationAt(big, 1)).toBeGreaterThan(durationAt(plain, 1));
    expect(memoryAt(fetch, 4)).toBeLessThan(memoryAt(plain, 1));
    expect(memoryAt(local, 1)).toBe(DEFAULT_PRIORS.local.baseBytes);
    expect(plain.measured).toBe(false);
  });

  it("fetches come first: a source tarball named like a heavy package is a tiny fetch, builtin ones too", () => {
    const tarball = e.estimate(pkg("gcc", "9.3.0.tar.xz", { fixedOutput: true })).model!;
    const builtin = e.estimate(pkg("chromium", "84.0.tar.xz", { system: "builtin" })).model!;
    expect([tarball.source, builtin.source]).toEqual(["fetch", "fetch"]);
    expect(durationAt(tarball, 1)).toBe(DEFAULT_PRIORS.fetch.oneCoreMs);
  });

  it("an operator's table replaces the built-in one", () => {
    const custom = new LearnedEstimator({
      heavy: [{ pname: "hello", oneCoreMinutes: 1, parallelFraction: 0, baseMiB: 10, perCoreMiB: 0, diskGiB: 1, note: "test" }],
    });
    expect(memoryAt(custom.estimate(pkg("hello", "2.10")).model!, 8)).toBe(10 * MiB);
    expect(custom.estimate(pkg("gcc", "10.3.0")).model!.source).toBe("default");
  });

  it("scalar estimates are at the reference cores", () => {
    const est = new LearnedEstimator({ referenceCores: 1 }).estimate(pkg("gcc", "10.3.0"));
    expect(est.durationMs).toBe(660 * MIN);
    expect(est.memoryBytes).toBe(800 * MiB);
  });
});

describe("learning", () => {
  it("fits base + per-core memory and Amdahl duration from two core counts", () => {
    const e = new LearnedEstimator();
    const n = pkg("foo", "1.0");
    e.observe(n, ok(1, 300, 100 * MIN));
    e.observe(n, ok(4, 600, 40 * MIN));
    const m = e.estimate(n).model!;
    expect(m).toMatchObject({ source: "history", measured: true, successes: 2 });
    expect(m.perCoreBytes).toBeCloseTo(100 * MiB, -3);
    expect(memoryAt(m, 1)).toBeGreaterThanOrEqual(300 * MiB);
    expect(memoryAt(m, 4)).toBeGreaterThanOrEqual(600 * MiB);
    expect(memoryAt(m, 2)).toBeCloseTo(400 * MiB, -4);
    // 100 = s + p, 40 = s + p/4  =>  p = 80 min, s = 20 min
    expect(m.serialMs).toBeCloseTo(20 * MIN, -3);
    expect(m.parallelMs).toBeCloseTo(80 * MIN, -3);
  });

  it("with one core count, scales the prior's split to the observation", () => {
    const e = new LearnedEstimator();
    const n = pkg("bar", "2");
    e.observe(n, ok(2, 1024, 10 * MIN));
    const m = e.estimate(n).model!;
    expect(memoryAt(m, 2)).toBe(1024 * MiB);
    const d = DEFAULT_PRIORS.default;
    expect(m.perCoreBytes / m.baseBytes).toBeCloseTo(d.perCoreBytes / d.baseBytes, 5);
    expect(durationAt(m, 2)).toBe(10 * MIN);
  });

  it("memory rises fast and falls slowly; duration is a moving average", () => {
    const e = new LearnedEstimator();
    const n = pkg("baz", "1");
    e.observe(n, ok(2, 100, 1000));
    e.observe(n, ok(2, 1000, 2000));
    const up = memoryAt(e.estimate(n).model!, 2);
    expect(up).toBeGreaterThan(700 * MiB);
    e.observe(n, ok(2, 100, 1000));
    expect(memoryAt(e.estimate(n).model!, 2)).toBeGreaterThan(up * 0.7);
  });

  it("an OOM raises the estimate to at least 1.25 x the memory at the kill, scaled down at fewer cores", () => {
    const e = new LearnedEstimator();
    const n = pkg("hog", "1");
    const changed = e.observe(n, { outcome: "out-of-memory", cores: 4, peakMemoryBytes: 900 * MiB, memoryLimitBytes: 1000 * MiB, durationMs: 5 });
    expect(changed).toMatchObject({ key: "hog@1", oomFloors: [{ cores: 4, bytes: 1250 * MiB }] });
    const m = e.estimate(n).model!;
    expect(m.measured).toBe(true);
    expect(memoryAt(m, 4)).toBeGreaterThanOrEqual(1250 * MiB);
    expect(memoryAt(m, 1)).toBeLessThan(memoryAt(m, 4));
    // A success at 2 cores supersedes floors at <= 2 cores only.
    e.observe(n, ok(2, 700, 1000));
    expect(e.learnedFor("hog@1")!.oomFloors).toHaveLength(1);
    e.observe(n, ok(4, 1100, 800));
    expect(e.learnedFor("hog@1")!.oomFloors).toEqual([]);
  });

  it("a success whose memory was not measured teaches duration only, and supersedes no OOM floor", () => {
    const e = new LearnedEstimator();
    const n = pkg("short", "1");
    e.observe(n, ok(2, 300, 1000));
    e.observe(n, { outcome: "out-of-memory", cores: 4, peakMemoryBytes: 900 * MiB, memoryLimitBytes: 800 * MiB, durationMs: 5 });
    const before = e.estimate(n).model!;
    // The flag decides, not the number: even a non-zero peak beside it is ignored.
    expect(e.observe(n, ok(4, 0, 3000, { memoryNotMeasured: true }))).not.toBeNull();
    e.observe(n, ok(2, 50, 3000, { memoryNotMeasured: true }));
    const after = e.estimate(n).model!;
    expect([after.baseBytes, after.perCoreBytes]).toEqual([before.baseBytes, before.perCoreBytes]);
    expect(e.learnedFor("short@1")!.oomFloors).toEqual([{ cores: 4, bytes: Math.ceil(900 * MiB * 1.25) }]);
    expect(e.learnedFor("short@1")!.samples.find((x) => x.cores === 4)).toMatchObject({ peakBytes: 0, durationMs: 3000 });
    expect(durationAt(after, 2)).toBeGreaterThan(durationAt(before, 2));
  });

  it("failures and aborts teach nothing and persist nothing", () => {
    const e = new LearnedEstimator();
    expect(e.observe(pkg("x", "1"), { ...ok(2, 100, 10), outcome: "failed" })).toBeNull();
    expect(e.observe(pkg("x", "1"), { ...ok(2, 100, 10), outcome: "aborted" })).toBeNull();
    expect(e.exportEstimates()).toEqual([]);
  });

  it("disk is the prior or a multiple of the outputs, whichever is larger", () => {
    const e = new LearnedEstimator();
    const n = pkg("big-out", "1");
    e.observe(n, ok(1, 100, 10, { outputBytes: 2 * GiB }));
    expect(e.estimate(n).model!.diskBytes).toBe(8 * GiB);
  });
});

describe("memoised estimates", () => {
  it("repeat asks return the same estimate until that key learns or is imported; other keys keep theirs", () => {
    const e = new LearnedEstimator();
    const [a, a2, b] = [pkg("foo", "1.2"), pkg("foo", "1.9"), pkg("bar", "3")];
    const first = e.estimate(a);
    const other = e.estimate(b);
    expect(e.estimate(a)).toBe(first);
    e.observe(a2, ok(2, 900, 5 * MIN)); // same key foo@1
    const learned = e.estimate(a);
    expect(learned).not.toBe(first);
    expect(learned.model!.source).toBe("history");
    expect(e.estimate(b)).toBe(other);
    const imported = new LearnedEstimator();
    const before = imported.estimate(a);
    imported.importEstimates(e.exportEstimates());
    expect(imported.estimate(a)).not.toBe(before);
    expect(imported.estimate(a)).toEqual(learned);
    expect(Object.isFrozen(learned)).toBe(true);
  });
});

describe("durable estimates", () => {
  it("export -> JSON -> import reproduces every estimate", () => {
    const a = new LearnedEstimator();
    const nodes = [pkg("foo", "1.2"), pkg("gcc", "10.3.0"), pkg("hog", "0.3.1")];
    a.observe(nodes[0], ok(1, 300, 1000, { atMs: 5 }));
    a.observe(nodes[0], ok(4, 600, 400, { atMs: 6 }));
    a.observe(nodes[1], ok(2, 1100, 600 * MIN));
    a.observe(nodes[2], { outcome: "out-of-memory", cores: 2, peakMemoryBytes: 100 * MiB, durationMs: 1 });
    const stored = JSON.parse(JSON.stringify(a.exportEstimates()));
    expect(stored.map((x: { key: string }) => x.key)).toEqual(["foo@1", "gcc@10", "hog@0.3"]);
    const b = new LearnedEstimator();
    expect(b.importEstimates(stored)).toEqual({ imported: 3, rejected: [] });
    for (const n of nodes) expect(b.estimate(n)).toEqual(a.estimate(n));
    expect(b.exportEstimates()).toEqual(a.exportEstimates());
  });

  it("malformed entries are skipped and reported, the rest imported", () => {
    const good = checkLearned({ format: 1, key: "k", samples: [{ cores: 2, peakBytes: 1, durationMs: 2, n: 1 }], oomFloors: [], outputBytes: 0, observations: 1, updatedAtMs: 0 });
    const e = new LearnedEstimator();
    const r = e.importEstimates([good, { format: 2, key: "x" }, { ...good, key: "" }, { ...good, key: "y", samples: [{ cores: 0 }] }, null]);
    expect(r.imported).toBe(1);
    expect(r.rejected.map((x) => x.index)).toEqual([1, 2, 3, 4]);
    expect(r.rejected[0].reason).toMatch(/unsupported format 2/);
    expect(r.rejected[2].reason).toMatch(/cores must be a number >= 1/);
  });
});
