import { describe, expect, it } from "vitest";
import { RecentMax, sampleLoopDelay } from "./loop-delay.js";

describe("RecentMax", () => {
  it("keeps the largest value of about the last minute, and forgets older ones", () => {
    const m = new RecentMax(60_000, 6);
    expect(m.max(1_000)).toBe(0);
    m.record(1_000, 0.3);
    m.record(25_000, 0.1);
    expect(m.max(30_000)).toBe(0.3);
    expect(m.max(59_999)).toBe(0.3); // 1 s is still in the six 10 s slots, 0–60 s
    expect(m.max(60_000)).toBe(0.1); // its slot (0–10 s) has dropped out
    m.record(60_000, 0.05); // reuses the slot of 0–10 s: the old 0.3 is cleared, not kept
    expect(m.max(65_000)).toBe(0.1);
    expect(m.max(200_000)).toBe(0);
  });
});

describe("sampleLoopDelay", () => {
  it("observes a loop held for 120 ms as one tick about that late, and stops when told", async () => {
    const seen: number[] = [];
    const stop = sampleLoopDelay((s) => seen.push(s), 10);
    await new Promise((r) => setTimeout(r, 50));
    const until = performance.now() + 120;
    while (performance.now() < until); // holds the loop
    await new Promise((r) => setTimeout(r, 50));
    stop();
    const count = seen.length;
    expect(Math.max(...seen)).toBeGreaterThanOrEqual(0.1);
    expect(seen.filter((s) => s >= 0.1)).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toHaveLength(count);
  });
});
