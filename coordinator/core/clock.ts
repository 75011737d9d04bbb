// Ports for time and randomness. Pure modules never read them: the shell (or
// the simulator) reads a Clock and passes `now` into the core. Only shells
// construct a SystemClock.

/** Source of the current time in ms. */
export interface Clock {
  /** Current time, ms since the Unix epoch (or since the simulation began). */
  now(): number;
}

/** The real wall clock. For shells only. */
export class SystemClock implements Clock {
  /** Date.now(). */
  now(): number {
    return Date.now();
  }
}

/** A clock that moves only when told to (tests, the simulator). */
export class VirtualClock implements Clock {
  constructor(private current = 0) {}

  /** The current virtual time. */
  now(): number {
    return this.current;
  }

  /** Moves forward by `ms` (never backwards); returns the new time. */
  advance(ms: number): number {
    if (!(ms >= 0)) throw new RangeError(`cannot advance a clock by ${ms} ms`);
    this.current += ms;
    return this.current;
  }

  /** Jumps to `t` (never backwards); returns it. */
  set(t: number): number {
    if (t < this.current) throw new RangeError(`cannot move a clock back from ${this.current} to ${t}`);
    this.current = t;
    return t;
  }
}

/** Source of uniform random numbers in [0, 1). */
export interface Random {
  /** Next number in [0, 1). */
  next(): number;
}

/** A seeded, repeatable generator (mulberry32): same seed, same sequence. */
export class SeededRandom implements Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Next number in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}
