// Debian's real Prometheus scrapes the coordinator's real /metrics while a job
// runs, and its query API then answers with the farm's numbers: worker
// throughput, the derivation queue by state, workers by state, and the
// coordinator's event-loop delay.
import { afterAll, beforeAll, expect, it } from "vitest";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { FarmCluster, REPO } from "../harness/cluster.js";
import { freePort, waitFor, waitForPort } from "../harness/ports.js";

const hasPrometheus = (() => {
  try {
    execFileSync("prometheus", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
})();

let farm: FarmCluster;
let prometheus: ChildProcess | undefined;
let promPort = 0;

beforeAll(async () => {
  if (!hasPrometheus) return;
  farm = await FarmCluster.start({ workers: [{ name: "m1" }, { name: "m2" }] });
  promPort = await freePort();
  const dir = path.join(farm.root, "prometheus");
  mkdirSync(dir, { recursive: true });
  const config = `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tmpnix-coordinator\n    static_configs:\n      - targets: ["127.0.0.1:${farm.metricsPort}"]\n`;
  writeFileSync(path.join(dir, "prometheus.yml"), config);
  prometheus = spawn("prometheus", [`--config.file=${path.join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${path.join(dir, "data")}`, `--web.listen-address=127.0.0.1:${promPort}`], { stdio: "ignore" });
  await waitForPort(promPort, 30_000);
}, 120_000);

afterAll(async () => {
  prometheus?.kill("SIGKILL");
  await farm?.stop();
});

async function query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
  expect(body.status).toBe("success");
  return body.data.result;
}

it.skipIf(!hasPrometheus)("Prometheus scrapes throughput, queue and workers from the live coordinator", async () => {
  const r = await farm.cli(["submit", `${path.join(REPO, "test/fixtures/demo/default.nix")}#demo`, "--follow", "--json"]);
  expect(r.code, r.stderr).toBe(0);
  // Wait for a scrape after the job finished.
  const builds = await waitFor("scraped build counts", async () => {
    const rows = await query('sum(tmpnix_builds_total{outcome="succeeded"})');
    return rows.length && Number(rows[0].value[1]) >= 12 ? rows : undefined;
  }, 60_000, 500);
  expect(Number(builds[0].value[1])).toBeGreaterThanOrEqual(12);
  const perWorker = await query('sum by (worker) (tmpnix_builds_total{outcome="succeeded"})');
  expect(perWorker.map((row) => row.metric.worker).sort()).toEqual(["m1", "m2"]);
  const done = await waitFor("done derivations gauge", async () => {
    const rows = await query('tmpnix_derivations{state="done"}');
    return rows.length && Number(rows[0].value[1]) >= 12 ? rows : undefined;
  }, 30_000, 500);
  expect(Number(done[0].value[1])).toBeGreaterThanOrEqual(12);
  expect(Number((await query('tmpnix_workers{state="active"}'))[0].value[1])).toBe(2);
  expect(Number((await query("sum(tmpnix_oom_kills_total) or vector(0)"))[0].value[1])).toBe(0);
  expect((await query('up{job="tmpnix-coordinator"}'))[0].value[1]).toBe("1");
  // The dashboard's loop-delay panel: a quantile over a range (a histogram adds up across scrapes), and the longest pause.
  const p99 = await waitFor("two scrapes of the loop-delay histogram", async () => {
    const rows = await query("histogram_quantile(0.99, sum by (le) (rate(tmpnix_event_loop_delay_seconds_bucket[1m])))");
    return rows.length ? rows : undefined;
  }, 30_000, 500);
  expect(Number(p99[0].value[1])).toBeGreaterThanOrEqual(0);
  expect(Number(p99[0].value[1])).toBeLessThan(10);
  expect(Number((await query("sum(tmpnix_event_loop_delay_seconds_count)"))[0].value[1])).toBeGreaterThan(10); // 100 ticks a second
  expect((await query("tmpnix_event_loop_longest_pause_seconds")).length).toBe(1);
}, 180_000);
