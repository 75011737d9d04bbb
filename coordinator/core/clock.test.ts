import { describe, expect, it } from "vitest";
import { SeededRandom, VirtualClock } from "./clock.js";

describe("VirtualClock", () => {
  it("moves only forward, only when told", () => {
    const c = new VirtualClock(10);
    expect(c.now()).toBe(10);
    expect(c.advance(5)).toBe(15);
    expect(c.set(20)).toBe(20);
    expect(() => c.set(19)).toThrow(RangeError);
    expect(() => c.advance(-1)).toThrow(RangeError);
  });
});

describe("SeededRandom", () => {
  it("repeats its sequence for a seed and stays in [0, 1)", () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    const xs = Array.from({ length: 1000 }, () => a.next());
    expect(Array.from({ length: 1000 }, () => b.next())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(new SeededRandom(43).next()).not.toBe(xs[0]);
    expect(new Set(xs.map((x) => Math.floor(x * 10))).size).toBe(10);
  });
});
