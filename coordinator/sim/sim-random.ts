// Deterministic randomness helpers on top of core's SeededRandom: string
// hashing (to key draws by pname) and the distributions the model uses.
import { SeededRandom, type Random } from "../core/clock.js";

/** FNV-1a 32-bit hash of `s` (not cryptographic; stable across runs). */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0;
  return h;
}

/** A generator determined by `seed` and `key` alone. */
export function keyedRandom(seed: number, key: string): SeededRandom {
  return new SeededRandom((hash32(key) ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0);
}

/** A standard normal draw (Box-Muller). */
export function normal(rnd: Random): number {
  const u = 1 - rnd.next(); // (0, 1]: log(0) is never taken
  const v = rnd.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** A lognormal draw with the given median and sigma (of the underlying normal). */
export function lognormal(rnd: Random, median: number, sigma: number): number {
  return median * Math.exp(sigma * normal(rnd));
}

/** An exponential draw with the given mean. */
export function exponential(rnd: Random, mean: number): number {
  return -mean * Math.log(1 - rnd.next());
}
