import { describe, expect, it } from "vitest";
import { SeededRandom } from "../core/clock.js";
import { EventQueue } from "./event-queue.js";

describe("EventQueue", () => {
  it("pops events by time, equal times in push order", () => {
    const q = new EventQueue<string>();
    q.push(30, "c");
    q.push(10, "a1");
    q.push(20, "b");
    q.push(10, "a2");
    q.push(10, "a3");
    const out: string[] = [];
    while (q.size > 0) out.push(q.pop()!.event);
    expect(out).toEqual(["a1", "a2", "a3", "b", "c"]);
    expect(q.pop()).toBeUndefined();
    expect(q.peekTime()).toBeUndefined();
  });

  it("agrees with a stable sort on 5,000 random pushes interleaved with pops", () => {
    const rnd = new SeededRandom(3);
    const q = new EventQueue<number>();
    const ref: { time: number; id: number }[] = [];
    const got: number[] = [];
    const want: number[] = [];
    for (let id = 0; id < 5000; id++) {
      const time = rnd.int(500);
      q.push(time, id);
      ref.push({ time, id });
      if (rnd.next() < 0.3) {
        ref.sort((a, b) => a.time - b.time || a.id - b.id);
        want.push(ref.shift()!.id);
        got.push(q.pop()!.event);
      }
    }
    ref.sort((a, b) => a.time - b.time || a.id - b.id);
    want.push(...ref.map((r) => r.id));
    while (q.size > 0) got.push(q.pop()!.event);
    expect(got).toEqual(want);
  });

  it("rejects a non-finite time", () => {
    expect(() => new EventQueue<number>().push(Infinity, 1)).toThrow(RangeError);
  });
});
