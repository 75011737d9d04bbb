// Work done in slices. A long synchronous job (validating and admitting a
// 100k-node submit) is written as a generator that yields between slices; the
// core stays synchronous and pure, and the shell decides what runs in between
// (heartbeats, results, dispatch). Tests and the simulator run it all at once.

/** A computation that yields between slices and returns its result. */
export type Steps<T> = Generator<void, T, void>;

/** Runs every slice at once. */
export function runAll<T>(steps: Steps<T>): T {
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Counts work and says when a slice of `size` units is full (size <= 0: never). */
export class SliceBudget {
  private used = 0;

  constructor(private readonly size: number) {}

  /** Spends `units`; true when the slice is used up (and starts the next). */
  spend(units = 1): boolean {
    this.used += units;
    if (this.size <= 0 || this.used < this.size) return false;
    this.used = 0;
    return true;
  }
}
