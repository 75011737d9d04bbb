// Reading a Prometheus histogram out of two scrapes, as PromQL's
// histogram_quantile(q, increase(x_bucket[...])) does: the benches want a
// run's p99 from the coordinator's /metrics, not a gauge's guess.

/** Cumulative counts of histogram `name` in one scrape's text, by upper bound (+Inf as Infinity), ascending. */
export function bucketCounts(text: string, name: string): [number, number][] {
  const out: [number, number][] = [];
  const re = new RegExp(`^${name}_bucket\\{(?:[^}]*,)?le="([^"]+)"[^}]*\\} (\\S+)$`, "gm");
  for (const m of text.matchAll(re)) out.push([m[1] === "+Inf" ? Infinity : Number(m[1]), Number(m[2])]);
  return out.sort((a, b) => a[0] - b[0]);
}

/** Observations between two scrapes, bucket by bucket (cumulative); a missing `before` counts from zero. */
export function bucketIncrease(before: [number, number][] | undefined, after: [number, number][]): [number, number][] {
  const base = new Map(before ?? []);
  return after.map(([le, n]) => [le, n - (base.get(le) ?? 0)]);
}

/**
 * The q-quantile (0..1) of cumulative bucket counts, interpolated linearly within its bucket like
 * histogram_quantile (the first bucket from 0; a quantile in +Inf answers the highest finite bound). NaN if empty.
 */
export function quantile(cumulative: [number, number][], q: number): number {
  const total = cumulative.at(-1)?.[1] ?? 0;
  if (total <= 0) return NaN;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, count] of cumulative) {
    if (count >= rank) {
      if (le === Infinity) return lowerBound;
      return count === lowerCount ? le : lowerBound + ((le - lowerBound) * (rank - lowerCount)) / (count - lowerCount);
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}

/** Observations above `bound` (a bucket's upper bound). */
export function countAbove(cumulative: [number, number][], bound: number): number {
  const total = cumulative.at(-1)?.[1] ?? 0;
  const atOrBelow = cumulative.find(([le]) => le === bound);
  if (atOrBelow === undefined) throw new Error(`no bucket with upper bound ${bound}`);
  return total - atOrBelow[1];
}
