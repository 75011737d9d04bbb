import { describe, expect, it } from "vitest";
import { bucketCounts, bucketIncrease, countAbove, quantile } from "./prom-histogram.js";

const scrape = (counts: number[]) =>
  [
    "# HELP x_seconds a histogram",
    "# TYPE x_seconds histogram",
    `x_seconds_bucket{le="0.01"} ${counts[0]}`,
    `x_seconds_bucket{le="0.05"} ${counts[1]}`,
    `x_seconds_bucket{le="0.1"} ${counts[2]}`,
    `x_seconds_bucket{le="+Inf"} ${counts[3]}`,
    `x_seconds_sum 1`,
    `x_seconds_count ${counts[3]}`,
    `x_seconds_other_bucket{le="0.01"} 999`,
  ].join("\n");

describe("reading a histogram from scrapes", () => {
  it("reads the cumulative buckets of one metric, +Inf last", () => {
    expect(bucketCounts(scrape([1, 2, 3, 4]), "x_seconds")).toEqual([[0.01, 1], [0.05, 2], [0.1, 3], [Infinity, 4]]);
  });

  it("answers quantiles of what happened between two scrapes, as histogram_quantile does", () => {
    const before = bucketCounts(scrape([90, 90, 90, 90]), "x_seconds");
    // Since then: 98 observations under 10 ms, 1 between 50 and 100 ms, 1 over 100 ms.
    const after = bucketCounts(scrape([188, 188, 189, 190]), "x_seconds");
    const run = bucketIncrease(before, after);
    expect(quantile(run, 0.5)).toBeCloseTo(0.01 * (50 / 98));
    expect(quantile(run, 0.99)).toBeCloseTo(0.1); // the 99th of 100 is the one in (0.05, 0.1]: its top
    expect(quantile(run, 1)).toBe(0.1); // in +Inf: the highest finite bound
    expect(countAbove(run, 0.05)).toBe(2);
    expect(countAbove(run, 0.1)).toBe(1);
    expect(() => countAbove(run, 0.2)).toThrow(/no bucket/);
  });

  it("has no quantile without observations", () => {
    expect(quantile(bucketIncrease(undefined, bucketCounts(scrape([0, 0, 0, 0]), "x_seconds")), 0.99)).toBeNaN();
  });
});
