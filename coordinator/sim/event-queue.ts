// The simulator's agenda: a binary min-heap of timed events. Events at the
// same time come out in insertion order, so a run is repeatable.

interface Entry<T> {
  time: number;
  seq: number;
  event: T;
}

function before<T>(a: Entry<T>, b: Entry<T>): boolean {
  return a.time < b.time || (a.time === b.time && a.seq < b.seq);
}

/** Events ordered by time (ties: first pushed, first out). */
export class EventQueue<T> {
  private readonly heap: Entry<T>[] = [];
  private seq = 0;

  /** Number of queued events. */
  get size(): number {
    return this.heap.length;
  }

  /** Queues `event` at `time` (ms). */
  push(time: number, event: T): void {
    if (!Number.isFinite(time)) throw new RangeError(`event time must be finite, got ${time}`);
    const h = this.heap;
    h.push({ time, seq: this.seq++, event });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  /** Time of the next event, or undefined when empty. */
  peekTime(): number | undefined {
    return this.heap[0]?.time;
  }

  /** Removes and returns the earliest event with its time. */
  pop(): { time: number; event: T } | undefined {
    const h = this.heap;
    const top = h[0];
    if (top === undefined) return undefined;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l], h[m])) m = l;
        if (r < h.length && before(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return { time: top.time, event: top.event };
  }
}
