import { describe, expect, it } from "vitest";
import { LOG_TAIL_LINES, LogTails } from "./log-tails.js";

describe("LogTails", () => {
  it("keeps the last lines of each build, and only the most recently failed builds", () => {
    const tails = new LogTails(2);
    const long = Array.from({ length: LOG_TAIL_LINES + 5 }, (_, i) => `line ${i}`);
    tails.remember("/a", long);
    expect(tails.of("/a")).toEqual(long.slice(5));
    tails.remember("/b", ["b"]);
    tails.remember("/a", ["a again"]); // refreshed: now the newest
    tails.remember("/c", ["c"]);
    expect(tails.of("/b")).toEqual([]);
    expect(tails.of("/a")).toEqual(["a again"]);
    expect(tails.of("/c")).toEqual(["c"]);
  });
});
