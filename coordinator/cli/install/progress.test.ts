import { describe, expect, it } from "vitest";
import { progressBar, progressReporter } from "./progress.js";

const MiB = 2 ** 20;
const at = (done: number, bytesDone: number, phase: "bytes" | "installed" = "bytes") => ({ phase, done, total: 4, bytesDone, bytesTotal: 100 * MiB });

describe("install progress", () => {
  it("shows paths, bytes, speed and ETA in one line", () => {
    expect(progressBar(at(1, 25 * MiB), 5000, 8)).toBe("[##------] 1/4 paths, 25 MiB / 100 MiB, 5.0 MiB/s, ETA 15s");
    expect(progressBar(at(4, 100 * MiB, "installed"), 10_000, 4)).toBe("[####] 4/4 paths, 100 MiB / 100 MiB, 10 MiB/s");
  });

  it("writes plain lines off a terminal: one per path, then a summary", () => {
    const lines: string[] = [];
    const report = progressReporter((l) => lines.push(l), false);
    report({ ...at(0, 0), phase: "resolved" });
    report(at(0, 10));
    report({ ...at(4, 100 * MiB, "installed"), storePath: "/s/x" });
    expect(lines[0]).toBe("4 paths to fetch (100 MiB unpacked)");
    expect(lines[1]).toBe("[4/4] /s/x");
    expect(lines[2]).toMatch(/^fetched 100 MiB in \d+s$/);
  });

  it("redraws one line in place on a terminal and ends it when done", () => {
    const out: string[] = [];
    const report = progressReporter(() => undefined, true, (s) => out.push(s) > 0);
    report(at(1, MiB));
    report(at(1, 2 * MiB)); // within 100 ms: not redrawn
    report(at(4, 100 * MiB, "installed"));
    expect(out).toHaveLength(2);
    expect(out.every((s) => s.startsWith("\r\x1b[K["))).toBe(true);
    expect(out[1].endsWith("\n")).toBe(true);
  });
});
