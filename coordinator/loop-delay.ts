// Event-loop delay as Prometheus can add up: every 10 ms a timer asks how
// late it ran, and each answer is one observation of a histogram. A histogram
// answers "p99 over the last minute" or "over this whole run" alike, for any
// number of scrapers. The gauge it replaces was reset by every scrape, so its
// "p99" was of one scrape's window (about the longest pause in it), and two
// scrapers each saw half of the pauses.

/** Buckets in seconds: fine around the 50 ms a responsive coordinator stays under, coarse for the rare long pause. */
export const LOOP_DELAY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10];

/**
 * Calls `observe` with how late (in seconds, beyond `periodMs`) each tick of a `periodMs` timer ran.
 * The timer does not keep the process alive. Returns a function that stops it.
 */
export function sampleLoopDelay(observe: (lateSeconds: number) => void, periodMs = 10): () => void {
  let expected = performance.now() + periodMs;
  let timer: NodeJS.Timeout;
  const tick = () => {
    const now = performance.now();
    observe(Math.max(0, now - expected) / 1000);
    expected = now + periodMs;
    timer = setTimeout(tick, periodMs).unref();
  };
  timer = setTimeout(tick, periodMs).unref();
  return () => clearTimeout(timer);
}

/** The largest value recorded in roughly the last `windowMs` (kept in `slots` slots; the oldest slot drops whole). */
export class RecentMax {
  private readonly slotMs: number;
  private readonly maxima: number[];
  private readonly starts: number[];

  constructor(windowMs = 60_000, slots = 6) {
    this.slotMs = windowMs / slots;
    this.maxima = new Array<number>(slots).fill(0);
    this.starts = new Array<number>(slots).fill(-Infinity);
  }

  record(nowMs: number, value: number): void {
    const i = this.slotAt(nowMs);
    this.maxima[i] = Math.max(this.maxima[i], value);
  }

  /** The largest value recorded in the window ending at `nowMs` (0 if none). */
  max(nowMs: number): number {
    let out = 0;
    const oldest = this.slotStart(nowMs) - this.slotMs * (this.maxima.length - 1);
    for (let i = 0; i < this.maxima.length; i++) if (this.starts[i] >= oldest) out = Math.max(out, this.maxima[i]);
    return out;
  }

  private slotStart(nowMs: number): number {
    return Math.floor(nowMs / this.slotMs) * this.slotMs;
  }

  /** The slot for `nowMs`, cleared if it last held an older period. */
  private slotAt(nowMs: number): number {
    const start = this.slotStart(nowMs);
    const i = Math.floor(start / this.slotMs) % this.maxima.length;
    if (this.starts[i] !== start) {
      this.starts[i] = start;
      this.maxima[i] = 0;
    }
    return i;
  }
}
