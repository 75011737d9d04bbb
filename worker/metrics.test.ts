import { describe, expect, it } from "vitest";
import { WorkerMetrics } from "./metrics.js";

describe("WorkerMetrics", () => {
  it("counts builds by outcome, durations, peaks and bytes, and serves them on /metrics", async () => {
    const m = new WorkerMetrics();
    const lease = { drvPath: "/tmp/nix/store/x.drv", epoch: 1 };
    m.recordBuild({ lease, outcome: "succeeded", outputs: [], durationMs: 2000, peakMemoryBytes: 100 * 1024 ** 2, cores: 1, error: "" });
    m.recordBuild({ lease, outcome: "out-of-memory", outputs: [], durationMs: 500, peakMemoryBytes: 0, cores: 1, error: "x" });
    m.uploaded(1000);
    m.downloaded(42);
    const { server, port } = await m.serve(0, "127.0.0.1");
    try {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(text).toContain('tmpnix_worker_builds_total{outcome="succeeded"} 1');
      expect(text).toContain('tmpnix_worker_builds_total{outcome="out-of-memory"} 1');
      expect(text).toContain('tmpnix_worker_build_duration_seconds_sum{outcome="succeeded"} 2');
      expect(text).toContain("tmpnix_worker_build_peak_memory_bytes_count 1");
      expect(text).toContain("tmpnix_worker_uploaded_bytes_total 1000");
      expect(text).toContain("tmpnix_worker_downloaded_bytes_total 42");
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    } finally {
      server.close();
    }
  });
});
