import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../core/errors.js";
import { defaultFleet, describeFleet, fleetCores, parseFleet, typicalCores } from "./fleet.js";
import { bootWorker, createWorkers } from "./sim-fleet.js";

const MB = 2 ** 20;
const HOUR = 3_600_000;

describe("fleet specs", () => {
  it("parses groups and platform options", () => {
    const f = parseFleet("3x1c:512M, 1x2c:4G/j2;life=6h;kill=never;boot=90s;uptime=zero");
    expect(f.groups).toEqual([
      { count: 3, cores: 1, memoryBytes: 512 * MB, maxBuilds: 1 },
      { count: 1, cores: 2, memoryBytes: 4096 * MB, maxBuilds: 2 },
    ]);
    expect(f).toMatchObject({ maxLifetimeMs: 6 * HOUR, randomKillMeanMs: 0, bootDelayMs: 90_000, initialUptime: "zero" });
    expect(fleetCores(f)).toBe(5);
    expect(describeFleet(f)).toContain("4 workers (3x1c:512M,1x2c:4G/j2)");
  });

  it("sizes the default mix from a bare count", () => {
    const f = parseFleet("20");
    expect(f.groups.map((g) => [g.count, g.memoryBytes / MB])).toEqual([[8, 512], [6, 1024], [4, 2048], [2, 4096]]);
    expect(defaultFleet(3).groups.reduce((a, g) => a + g.count, 0)).toBe(3);
    expect(f.maxLifetimeMs).toBe(12 * HOUR);
  });

  it("a typical worker's cores are the median worker's", () => {
    expect(typicalCores(parseFleet("100"))).toBe(1);
    expect(typicalCores(parseFleet("3x1c:512M,4x4c:8G"))).toBe(4);
    expect(typicalCores(parseFleet("4x1c:512M,3x8c:8G"))).toBe(1);
  });

  it("rejects what it does not understand", () => {
    expect(() => parseFleet("3x1c")).toThrow(InvalidInputError);
    expect(() => parseFleet("3x1c:1G;colour=blue")).toThrow(InvalidInputError);
    expect(() => parseFleet("0x1c:1G")).toThrow(InvalidInputError);
  });

  it("gives big-parallel to big workers and draws the same lifetimes for the same seed", () => {
    const f = parseFleet("2x1c:512M,2x1c:2G");
    const ws = createWorkers(f);
    expect(ws.map((w) => w.features)).toEqual([[], [], ["big-parallel"], ["big-parallel"]]);
    const again = createWorkers(f);
    ws.forEach((w) => bootWorker(w, f, 9, 0));
    again.forEach((w) => bootWorker(w, f, 9, 0));
    expect(again.map((w) => w.killAtMs)).toEqual(ws.map((w) => w.killAtMs));
    for (const w of ws) expect(w.killAtMs).toBeLessThanOrEqual(12 * HOUR - w.uptimeAtJoinMs);
    // A replacement starts fresh.
    bootWorker(ws[0], f, 9, 5 * HOUR);
    expect(ws[0].uptimeAtJoinMs).toBe(0);
    expect(ws[0].incarnation).toBe(2);
  });
});
