import { describe, expect, it } from "vitest";
import { newDrvRecord } from "./drv-state.js";
import { memoryAt, type Estimate, type ResourceModel } from "./estimator.js";
import { MemoryFit, shortDuration, type MemoryFitConfig } from "./memory-fit.js";
import type { PlacementDecision, WorkerCandidate } from "./placement.js";
import { mkNode, mkWorker } from "./test-support.js";
import type { WorkerInfo } from "./types.js";
import { newWorkerRecord } from "./worker-state.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const HOUR = 3_600_000;
const NOW = 1_000_000;

function cand(info: Partial<WorkerInfo> & { workerId: string }, reserved: { memory?: number; cores?: number; running?: number; disk?: number } = {}): WorkerCandidate {
  const w = newWorkerRecord(mkWorker(info.workerId, info), NOW, NOW + 10_000);
  const running = reserved.running ?? (reserved.memory ? 1 : 0);
  return { worker: w, running, reservedCores: reserved.cores ?? 0, reservedMemoryBytes: reserved.memory ?? 0, reservedDiskBytes: reserved.disk ?? 0 };
}

/** A measured model: memory = base + perCore * c, duration = ms (serial). */
function est(baseMiB: number, perCoreMiB: number, durationMs = 60_000, extra: Partial<ResourceModel> = {}): Estimate {
  const model: ResourceModel = {
    baseBytes: baseMiB * MiB,
    perCoreBytes: perCoreMiB * MiB,
    serialMs: durationMs,
    parallelMs: 0,
    diskBytes: GiB,
    floors: [],
    source: "history",
    measured: true,
    ...extra,
  };
  return { memoryBytes: memoryAt(model, 2), durationMs, model };
}

function place(estimate: Estimate, candidates: WorkerCandidate[], opts: { busy?: WorkerCandidate[]; coreLimit?: number; config?: Partial<MemoryFitConfig> } = {}): PlacementDecision {
  const node = mkNode("x");
  const record = newDrvRecord(node.drvPath, 0);
  record.coreLimit = opts.coreLimit ?? 0;
  const busy = opts.busy ?? [];
  const decision = new MemoryFit(opts.config).place({ now: NOW, node, record, estimate, candidates, busy });
  // The dispatcher hands over the fleet it listed once per pass: the same decision as one read off the candidates.
  const fleet = [...candidates, ...busy].map((c) => c.worker).filter((w) => w.state === "active");
  expect(new MemoryFit(opts.config).place({ now: NOW, node, record, estimate, candidates, busy, fleet })).toEqual(decision);
  return decision;
}

const margin = (memory: number) => Math.max(Math.min(0.1 * memory, 128 * MiB), 64 * MiB);

describe("memory-fit: memory", () => {
  it("a big build lands only on a worker that fits, with the most cores that fit with headroom", () => {
    const big = est(1024, 1024); // 2 GiB at 1 core, 6 GiB at 5 (7.2 with 20% headroom)
    const d = place(big, [cand({ workerId: "small", memoryBytes: 2 * GiB, cores: 2 }), cand({ workerId: "large", memoryBytes: 8 * GiB, cores: 8 })]);
    // 8064 MiB to hand out: 6 cores (7 GiB + 20%) would not leave the headroom a measured need gets.
    expect(d).toMatchObject({ ok: true, workerId: "large", cores: 5 });
    if (!d.ok) return;
    expect(memoryAt(big.model!, d.cores)).toBeLessThanOrEqual(d.memoryReservationBytes);
    expect(d.memoryReservationBytes).toBeLessThanOrEqual(8 * GiB - margin(8 * GiB));
  });

  it("a small worker runs a build with fewer cores rather than into an OOM", () => {
    const d = place(est(256, 512), [cand({ workerId: "w", memoryBytes: 2 * GiB, cores: 4 })]);
    // 1280 MiB at 2 cores plus 20% headroom fits in 2048 - 128; 1792 at 3 fits only bare (an OOM coin flip).
    expect(d).toMatchObject({ ok: true, cores: 2 });
  });

  it("a peak seen once gets twice the headroom; it settles to the configured 20% as observations add up", () => {
    // 370 MiB measured; a 512 MiB worker hands out 448 MiB, a 1 GiB one 960 MiB.
    const workers = () => [cand({ workerId: "512m", memoryBytes: 512 * MiB }), cand({ workerId: "1g", memoryBytes: GiB })];
    // Seen once: 370 + 40% = 518 MiB does not fit the small worker.
    expect(place(est(370, 0, 60_000, { successes: 1 }), workers())).toMatchObject({ ok: true, workerId: "1g" });
    // Seen four times: 370 + 25% = 462.5 MiB still does not.
    expect(place(est(370, 0, 60_000, { successes: 4 }), workers())).toMatchObject({ ok: true, workerId: "1g" });
    // Seen a hundred times: 370 + 20.2% = 445 MiB fits the tightest worker.
    expect(place(est(370, 0, 60_000, { successes: 100 }), workers())).toMatchObject({ ok: true, workerId: "512m" });
  });

  it("a measured need no worker can give headroom runs bare on the roomiest worker, at one core", () => {
    const d = place(est(3600, 0), [cand({ workerId: "a", memoryBytes: 4 * GiB, maxBuilds: 2 }), cand({ workerId: "b", memoryBytes: 4 * GiB + 256 * MiB, maxBuilds: 2 })]);
    expect(d).toMatchObject({ ok: true, workerId: "b", memoryReservationBytes: 4 * GiB + 256 * MiB - 128 * MiB });
    // 960 MiB at 1 core, 1280 at 2; 1312 MiB to hand out: 2 cores would fit bare, with almost no margin.
    const huge = place(est(640, 320, 60_000, { successes: 1 }), [cand({ workerId: "w", memoryBytes: 1440 * MiB, cores: 2 })]);
    expect(huge).toMatchObject({ ok: true, workerId: "w", cores: 1, memoryReservationBytes: 1312 * MiB });
  });

  it("a guess beyond every worker gets one try on an idle largest worker with all it can give; a measured one waits", () => {
    const guess = est(7168, 0, 60_000, { measured: false, source: "heavy-table" });
    const idle = cand({ workerId: "big", memoryBytes: 4 * GiB, maxBuilds: 2 });
    const small = cand({ workerId: "small", memoryBytes: 2 * GiB });
    expect(place(guess, [small, idle])).toMatchObject({ ok: true, workerId: "big", cores: 1, memoryReservationBytes: 4 * GiB - 128 * MiB });
    // Not while the largest worker runs something: the try gets the whole worker.
    const busyBig = cand({ workerId: "big", memoryBytes: 4 * GiB, maxBuilds: 2 }, { memory: GiB });
    expect(place(guess, [small, busyBig])).toEqual({ ok: false, reason: "needs ~7168 MB at 1 core by a guess; largest worker has 4096 MB; waiting for one to be idle to try there" });
    expect(place(est(7168, 0), [small, idle])).toEqual({ ok: false, reason: "needs ~7168 MB at 1 core; largest worker has 4096 MB; waiting for a bigger worker" });
  });

  it("respects the record's OOM core cap", () => {
    expect(place(est(100, 10), [cand({ workerId: "w", cores: 8 })], { coreLimit: 2 })).toMatchObject({ ok: true, cores: 2 });
  });

  it("reservations add up: what running builds hold is not handed out again", () => {
    const need = est(2048, 0); // 2 GiB at any cores
    const worker = { workerId: "w", memoryBytes: 8 * GiB, cores: 4, maxBuilds: 4 };
    const free = place(need, [cand(worker, { memory: 4 * GiB, cores: 1 })]);
    expect(free).toMatchObject({ ok: true, cores: 3 });
    if (free.ok) expect(4 * GiB + free.memoryReservationBytes).toBeLessThanOrEqual(8 * GiB - margin(8 * GiB));
    const full = place(need, [cand(worker, { memory: 6 * GiB, cores: 1 })]);
    expect(full).toEqual({ ok: false, reason: "waiting for memory: needs ~2048 MB at 1 core; most unreserved on a free worker is 1920 MB" });
  });

  it("places nothing that would exceed any worker's RAM, and says so", () => {
    const d = place(est(10 * 1024, 0), [cand({ workerId: "a", memoryBytes: 8 * GiB })], { busy: [cand({ workerId: "b", memoryBytes: 4 * GiB, maxBuilds: 1 }, { memory: GiB })] });
    expect(d).toEqual({ ok: false, reason: "needs ~10240 MB at 1 core; largest worker has 8192 MB; waiting for a bigger worker" });
  });

  it("reserves headroom when there is room; a guess gets up to twice its need within the slot share; a lone slot gets all of it", () => {
    const measured = place(est(1000, 0), [cand({ workerId: "w", memoryBytes: 16 * GiB, maxBuilds: 2 })]);
    expect(measured.ok && measured.memoryReservationBytes).toBe(Math.floor(1000 * MiB * 1.2));
    const guess = place(est(1000, 0, 60_000, { measured: false, source: "default" }), [cand({ workerId: "w", memoryBytes: 16 * GiB, maxBuilds: 2 })]);
    expect(guess.ok && guess.memoryReservationBytes).toBe(2000 * MiB);
    const tight = place(est(1000, 0, 60_000, { measured: false, source: "default" }), [cand({ workerId: "w", memoryBytes: 2 * GiB, maxBuilds: 2 })]);
    expect(tight.ok && tight.memoryReservationBytes).toBe(Math.floor(1000 * MiB * 1.2));
    // A tiny need still gets an absolute margin above it.
    const tiny = place(est(20, 0), [cand({ workerId: "w", memoryBytes: 16 * GiB, maxBuilds: 2 })]);
    expect(tiny.ok && tiny.memoryReservationBytes).toBe(52 * MiB);
    // One slot: nothing else could use the rest, so the kill limit is all the worker can give.
    const lone = place(est(1000, 0), [cand({ workerId: "w", memoryBytes: 2 * GiB, maxBuilds: 1 })]);
    expect(lone.ok && lone.memoryReservationBytes).toBe(2 * GiB - 128 * MiB);
  });

  it("after an OOM kill the build gets twice its raised need (within the slot share) on the roomiest worker", () => {
    const node = mkNode("x");
    const record = newDrvRecord(node.drvPath, 0);
    record.oomKills = 1;
    const candidates = [cand({ workerId: "a", memoryBytes: 2 * GiB }), cand({ workerId: "b", memoryBytes: 8 * GiB })];
    const d = new MemoryFit().place({ now: NOW, node, record, estimate: est(1000, 0), candidates });
    expect(d).toMatchObject({ ok: true, workerId: "b", memoryReservationBytes: 2000 * MiB });
  });

  it("prefers the worker where the build finishes soonest, then the tightest fit", () => {
    const e = { ...est(500, 0), model: { ...est(500, 0).model!, serialMs: 0, parallelMs: 8 * HOUR } };
    const wide = cand({ workerId: "wide", cores: 8, memoryBytes: 16 * GiB });
    const narrow = cand({ workerId: "narrow", cores: 2, memoryBytes: 4 * GiB });
    expect(place(e, [narrow, wide])).toMatchObject({ ok: true, workerId: "wide", cores: 8 });
    const a = cand({ workerId: "a", cores: 2, memoryBytes: 16 * GiB });
    const b = cand({ workerId: "b", cores: 2, memoryBytes: 4 * GiB });
    expect(place(e, [a, b])).toMatchObject({ ok: true, workerId: "b" });
  });
});

describe("memory-fit: disk", () => {
  it("skips a worker whose free disk (minus running builds' estimates) is short", () => {
    const e = est(100, 0, 1000, { diskBytes: 10 * GiB });
    const low = cand({ workerId: "low", freeDiskBytes: 12 * GiB }, { disk: 5 * GiB, running: 1 });
    expect(place(e, [low])).toEqual({ ok: false, reason: "waiting for disk: needs ~10240 MB; most free on a free worker is 7168 MB" });
    const roomy = cand({ workerId: "roomy", freeDiskBytes: 50 * GiB });
    expect(place(e, [low, roomy])).toMatchObject({ ok: true, workerId: "roomy", diskReservationBytes: 10 * GiB });
  });
});

describe("memory-fit: remaining lifetime", () => {
  const old = { workerId: "old", maxLifetimeSeconds: 4 * 3600, uptimeSeconds: 4 * 3600 - 600 }; // 10 min left
  const fresh = { workerId: "fresh", maxLifetimeSeconds: 4 * 3600, uptimeSeconds: 0 };
  const hourLong = est(100, 0, HOUR);

  it("a worker near its end is not given a long build while a fresh one is free", () => {
    // old is listed first and would be the tighter fit: lifetime decides.
    expect(place(hourLong, [cand({ ...old, memoryBytes: 4 * GiB }), cand({ ...fresh, memoryBytes: 8 * GiB })])).toMatchObject({ ok: true, workerId: "fresh" });
    // A short build may still use the old worker.
    expect(place(est(100, 0, 60_000), [cand({ ...old, memoryBytes: 4 * GiB }), cand({ ...fresh, memoryBytes: 8 * GiB })])).toMatchObject({ ok: true, workerId: "old" });
  });

  it("waits for a busy worker that lives long enough rather than start where it cannot finish", () => {
    const d = place(hourLong, [cand(old)], { busy: [cand({ ...fresh, maxBuilds: 1 }, { memory: GiB })] });
    expect(d).toEqual({ ok: false, reason: "needs ~1h; waiting for worker fresh (4h left) to free a slot" });
  });

  it("does not wait for a busy worker that could not give a measured need its headroom once free", () => {
    // 1510 MiB seen once: 2114 MiB with headroom; a 2 GiB worker hands out 1920.
    const llvm = est(1510, 0, 8 * HOUR, { successes: 1 });
    const twelve = { maxLifetimeSeconds: 12 * 3600 };
    const oldBig = cand({ workerId: "big", memoryBytes: 4 * GiB, ...twelve, uptimeSeconds: 6 * 3600 });
    const freshSmall = cand({ workerId: "small", memoryBytes: 2 * GiB, maxBuilds: 1, ...twelve, uptimeSeconds: 0 }, { memory: GiB });
    expect(place(llvm, [oldBig], { busy: [freshSmall] })).toMatchObject({ ok: false, reason: expect.stringMatching(/waiting for a fresh worker$/) });
    const freshBig = cand({ workerId: "big2", memoryBytes: 4 * GiB, maxBuilds: 1, ...twelve, uptimeSeconds: 0 }, { memory: GiB });
    expect(place(llvm, [oldBig], { busy: [freshSmall, freshBig] })).toMatchObject({ ok: false, reason: expect.stringMatching(/waiting for worker big2/) });
  });

  it("with no worker that lives long enough, waits for a fresh one and says why", () => {
    const threeHours = est(100, 0, 3 * HOUR);
    const d = place(threeHours, [cand(old), cand({ workerId: "mid", maxLifetimeSeconds: 4 * 3600, uptimeSeconds: 3600 })]);
    expect(d).toEqual({ ok: false, reason: "needs ~3h, longest remaining worker lifetime is 3h; waiting for a fresh worker" });
  });

  it("a duration measured once asks for more spare lifetime than one measured many times", () => {
    const twelve = { maxLifetimeSeconds: 12 * 3600 };
    const tenHoursThirtyLeft = () => [cand({ workerId: "w", ...twelve, uptimeSeconds: 1.5 * 3600 })];
    // 9 h seen ten times: 9 x 1.01 x 1.1 = 10 h of the 10.5 h left.
    expect(place(est(100, 0, 9 * HOUR, { successes: 10 }), tenHoursThirtyLeft())).toMatchObject({ ok: true, workerId: "w" });
    // 9 h seen once (it may have been a short draw): 9 x 1.1 x 1.1 = 10.9 h; wait for a fresher worker.
    expect(place(est(100, 0, 9 * HOUR, { successes: 1 }), tenHoursThirtyLeft())).toMatchObject({ ok: false, reason: expect.stringMatching(/waiting for a fresh worker$/) });
  });

  it("after waiting longer than the slack would buy, a build settles for a worker that outlives it by half the slack", () => {
    const node = mkNode("x");
    const record = newDrvRecord(node.drvPath, 0);
    const twelve = { maxLifetimeSeconds: 12 * 3600 };
    const nineHours = est(100, 0, 9 * HOUR, { successes: 10 });
    // 9.6 h left: the strict need is 9 x 1.01 x 1.1 = 10 h; half the slack is 9.45 h.
    const worker = () => [cand({ workerId: "w", ...twelve, uptimeSeconds: 2.4 * 3600 })];
    const at = (waitedMs: number | undefined) =>
      new MemoryFit().place({ now: NOW, node, record, estimate: nineHours, candidates: worker(), passedOverSinceMs: waitedMs === undefined ? undefined : NOW - waitedMs });
    expect(at(undefined)).toMatchObject({ ok: false, reason: expect.stringMatching(/waiting for a fresh worker$/) });
    expect(at(0.8 * HOUR)).toMatchObject({ ok: false }); // less than 10% of 9 h
    expect(at(0.9 * HOUR)).toMatchObject({ ok: true, workerId: "w" });
    // Never below the estimate plus half the slack: 9.3 h left is too little however long it waited.
    const older = [cand({ workerId: "w", ...twelve, uptimeSeconds: 2.7 * 3600 })];
    expect(new MemoryFit().place({ now: NOW, node, record, estimate: nineHours, candidates: older, passedOverSinceMs: NOW - 5 * HOUR })).toMatchObject({ ok: false });
    // A build beyond the fleet never settles: 11 h needs a nearly fresh worker (11.4 h left), not 11 h x 1.05.
    const elevenHours = est(100, 0, 11 * HOUR);
    const midLife = [cand({ workerId: "mid", ...twelve, uptimeSeconds: 3600 })]; // 11 h left
    expect(new MemoryFit().place({ now: NOW, node, record, estimate: elevenHours, candidates: midLife, passedOverSinceMs: NOW - 5 * HOUR })).toMatchObject({ ok: false });
  });

  it("a build longer than even a fresh worker allows starts on a nearly fresh worker instead of waiting forever", () => {
    const elevenHours = est(100, 0, 11 * HOUR);
    const twelve = { maxLifetimeSeconds: 12 * 3600 };
    const d = place(elevenHours, [cand({ workerId: "mid", ...twelve, uptimeSeconds: 3600 })]);
    expect(d).toEqual({
      ok: false,
      reason: "needs ~11h, more than a fresh worker's 12h allows with 10% to spare; waiting for a worker with 11h24m left to start on the freshest (longest remaining now 11h)",
    });
    const started = place(elevenHours, [cand({ workerId: "mid", ...twelve, uptimeSeconds: 3600 }), cand({ workerId: "new", ...twelve, uptimeSeconds: 60 })]);
    expect(started).toMatchObject({ ok: true, workerId: "new" });
  });

  it("an attempt lost with its worker after running 3h is expected to take longer next time", () => {
    const node = mkNode("x");
    const record = newDrvRecord(node.drvPath, 0);
    record.lostAfterMs = 3 * HOUR;
    const fourHoursLeft = cand({ workerId: "w", maxLifetimeSeconds: 12 * 3600, uptimeSeconds: 8 * 3600 });
    const d = new MemoryFit().place({ now: NOW, node, record, estimate: est(100, 0, 60_000), candidates: [fourHoursLeft] });
    expect(d).toMatchObject({ ok: false, reason: expect.stringMatching(/^needs ~4h30m, longest remaining worker lifetime is 4h/) });
  });

  it("start-anyway starts it on the longest-lived worker instead", () => {
    const d = place(est(100, 0, 11 * HOUR), [cand(old), cand({ workerId: "mid", maxLifetimeSeconds: 4 * 3600, uptimeSeconds: 3600 })], {
      config: { lifetimePolicy: "start-anyway" },
    });
    expect(d).toMatchObject({ ok: true, workerId: "mid" });
  });

  it("no lifetime (0) means unlimited", () => {
    expect(place(est(100, 0, 100 * HOUR), [cand({ workerId: "forever", maxLifetimeSeconds: 0, uptimeSeconds: 10 ** 7 })])).toMatchObject({ ok: true });
    expect(shortDuration(Infinity)).toBe("unlimited");
    expect(shortDuration(3 * HOUR + 20 * 60_000)).toBe("3h20m");
  });
});

describe("memory-fit: platform", () => {
  it("gives the shared platform reasons when no worker runs it", () => {
    expect(place(est(1, 0), [cand({ workerId: "w", maxBuilds: 1 }, { running: 1 })])).toEqual({ ok: false, reason: "no active worker has a free slot" });
    const node = mkNode("vm", [], { requiredSystemFeatures: ["kvm"] });
    const d = new MemoryFit().place({ now: NOW, node, record: newDrvRecord(node.drvPath, 0), estimate: est(1, 0), candidates: [cand({ workerId: "w" })] });
    expect(d).toEqual({ ok: false, reason: "no free worker has features [kvm]" });
  });

  it("without a model (another estimator) uses its scalar memory, or the default guess", () => {
    const flat = place({ memoryBytes: 3 * GiB, durationMs: null }, [cand({ workerId: "w", memoryBytes: 4 * GiB })]);
    expect(flat).toMatchObject({ ok: true });
    expect(place({ memoryBytes: 5 * GiB, durationMs: null }, [cand({ workerId: "w", memoryBytes: 4 * GiB })]).ok).toBe(false);
    expect(place({ memoryBytes: null, durationMs: null }, [cand({ workerId: "w" })]).ok).toBe(true);
  });
});
