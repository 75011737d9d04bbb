// Prometheus metrics of one worker, in a registry of its own (tmpnix_worker_*),
// optionally served on /metrics.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { BuildReport } from "../proto/types.js";
import type { TransferCounters } from "./nix-executor.js";

/** The worker's metrics. */
export class WorkerMetrics implements TransferCounters {
  readonly registry = new Registry();
  private readonly builds: Counter<"outcome">;
  private readonly duration: Histogram<"outcome">;
  private readonly peakMemory: Histogram;
  private readonly uploadedBytes: Counter;
  private readonly downloadedBytes: Counter;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.builds = new Counter({ name: "tmpnix_worker_builds_total", help: "Builds finished, by outcome", labelNames: ["outcome"], registers });
    this.duration = new Histogram({
      name: "tmpnix_worker_build_duration_seconds",
      help: "Wall-clock time of builds (fetch + build + upload)",
      labelNames: ["outcome"],
      buckets: [1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600],
      registers,
    });
    this.peakMemory = new Histogram({
      name: "tmpnix_worker_build_peak_memory_bytes",
      help: "Peak memory of a build's process tree",
      buckets: [16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384].map((m) => m * 1024 ** 2),
      registers,
    });
    this.uploadedBytes = new Counter({ name: "tmpnix_worker_uploaded_bytes_total", help: "NAR bytes uploaded to the cache", registers });
    this.downloadedBytes = new Counter({ name: "tmpnix_worker_downloaded_bytes_total", help: "NAR bytes fetched from the cache", registers });
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: "tmpnix_worker_" });
  }

  /** Records one finished build. */
  recordBuild(r: BuildReport): void {
    this.builds.inc({ outcome: r.outcome });
    this.duration.observe({ outcome: r.outcome }, r.durationMs / 1000);
    if (r.peakMemoryBytes > 0) this.peakMemory.observe(r.peakMemoryBytes);
  }

  uploaded(bytes: number): void {
    this.uploadedBytes.inc(bytes);
  }

  downloaded(bytes: number): void {
    this.downloadedBytes.inc(bytes);
  }

  /** Serves GET /metrics on `port` (0 picks a free one); resolves with the server and its port. */
  async serve(port: number, host = "0.0.0.0"): Promise<{ server: http.Server; port: number }> {
    const server = http.createServer((req, res) => {
      if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
        res.writeHead(404).end("not found\n");
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { "content-type": this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(`${err.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    server.unref();
    return { server, port: (server.address() as AddressInfo).port };
  }
}
