import pino from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { DrainControl } from "./drain-control.js";

const logger = pino({ level: "silent" });

describe("DrainControl", () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("drains once, with the first deadline, and stops reconnecting a little after it", () => {
    const c = new DrainControl(30_000, logger);
    c.begin("SIGTERM");
    c.begin("SIGINT", 5);
    expect(c.drain.aborted).toBe(true);
    expect(c.drain.reason).toBe("SIGTERM");
    expect(c.deadline()).toBe(1_030_000);
    vi.advanceTimersByTime(30_000);
    expect(c.stop.aborted).toBe(false);
    vi.advanceTimersByTime(5000);
    expect(c.stop.aborted).toBe(true);
  });

  it("stops at once when nothing runs and no result waits for an ack", () => {
    const c = new DrainControl(30_000, logger, () => true);
    c.begin("SIGTERM");
    expect(c.stop.aborted).toBe(true);
  });

  it("drains ahead of a platform lifetime, with the end of life as the deadline", () => {
    const c = new DrainControl(30_000, logger);
    c.scheduleEndOfLife(3000, 3600); // 600 s left
    vi.advanceTimersByTime(600_000 - 35_001);
    expect(c.drain.aborted).toBe(false);
    vi.advanceTimersByTime(1);
    expect(c.drain.aborted).toBe(true);
    expect(c.deadline()).toBe(1_600_000);
    expect(String(c.drain.reason)).toContain("lifetime");
  });
});
