// Keeps the operator kits honest: the Grafana dashboard and the alert rules may
// only use metrics the coordinator and worker really export, and Prometheus'
// own checker must accept the configs, the rules, their unit tests and every
// PromQL query of the dashboard.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.dirname(here);
const read = (p: string) => readFileSync(path.join(repo, p), "utf8");

const METRIC_SOURCES = ["coordinator/metrics.ts", "worker/metrics.ts"];
const DASHBOARD = "deploy/grafana/tmpnix-farm.json";
const PROM_CONFIG = "deploy/prometheus/prometheus.yml";
const ALERTS = "deploy/prometheus/alerts.yml";
const ALERT_TESTS = "deploy/prometheus/alerts.test.yml";

/** Metric names a prom-client source file declares; histograms also expose _bucket/_sum/_count. */
function declaredMetrics(source: string): Set<string> {
  const names = new Set<string>();
  for (const m of source.matchAll(/\bname:\s*"(tmpnix_[a-z0-9_]+)"/g)) names.add(m[1]);
  for (const m of source.matchAll(/\bgaugeFrom\(\s*"(tmpnix_[a-z0-9_]+)"/g)) names.add(m[1]);
  for (const m of source.matchAll(/new Histogram\(\{\s*name:\s*"(tmpnix_[a-z0-9_]+)"/g)) {
    for (const suffix of ["_bucket", "_sum", "_count"]) names.add(m[1] + suffix);
  }
  return names;
}

/** tmpnix_* metric names a PromQL expression refers to. */
const metricsIn = (expr: string) => [...expr.matchAll(/\btmpnix_[a-z0-9_]+/g)].map((m) => m[0]);

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  targets?: { expr: string; datasource?: { uid: string } }[];
  panels?: Panel[];
}

const dashboard = JSON.parse(read(DASHBOARD)) as {
  schemaVersion: number;
  uid: string;
  __inputs: { name: string; type: string; pluginId: string }[];
  templating: { list: { name: string; type: string; definition?: string }[] };
  panels: Panel[];
};

/** Every panel, including those inside collapsed rows. */
function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

const panels = allPanels(dashboard.panels);
const queries = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr, uid: t.datasource?.uid })));

describe("metric names stay in sync with the code", () => {
  const declared = new Set(METRIC_SOURCES.flatMap((f) => [...declaredMetrics(read(f))]));

  it("finds the metrics declared in the sources", () => {
    // Guards the extraction itself: if these vanish the regexes no longer match the code.
    expect(declared).toContain("tmpnix_builds_total");
    expect(declared).toContain("tmpnix_derivations");
    expect(declared).toContain("tmpnix_build_duration_seconds_bucket");
    expect(declared).toContain("tmpnix_worker_uploaded_bytes_total");
  });

  it("the dashboard uses only declared metrics", () => {
    const used = [...queries.map((q) => q.expr), ...dashboard.templating.list.map((v) => v.definition ?? "")].flatMap(metricsIn);
    expect(used.length).toBeGreaterThan(20);
    expect(used.filter((name) => !declared.has(name))).toEqual([]);
  });

  it("the dashboard covers every coordinator metric", () => {
    const used = new Set(queries.flatMap((q) => metricsIn(q.expr)).map((n) => n.replace(/_(bucket|sum|count)$/, "")));
    const coordinator = [...declaredMetrics(read("coordinator/metrics.ts"))].filter((n) => !/_(bucket|sum|count)$/.test(n));
    expect(coordinator.filter((name) => !used.has(name))).toEqual([]);
  });

  it("the alert rules use only declared metrics", () => {
    const rules = read(ALERTS).replace(/#.*$/gm, "");
    const used = metricsIn(rules);
    expect(used.length).toBeGreaterThan(5);
    expect(used.filter((name) => !declared.has(name))).toEqual([]);
  });
});

describe("dashboard shape", () => {
  it("is importable: Prometheus data source as the DS_PROMETHEUS input and variable", () => {
    expect(dashboard.schemaVersion).toBe(39);
    expect(dashboard.uid).toBe("tmpnix-farm");
    expect(dashboard.__inputs).toEqual([expect.objectContaining({ name: "DS_PROMETHEUS", type: "datasource", pluginId: "prometheus" })]);
    expect(dashboard.templating.list.map((v) => v.name)).toContain("DS_PROMETHEUS");
    expect(queries.length).toBeGreaterThan(20);
    for (const q of queries) expect(q.uid, q.panel).toBe("${DS_PROMETHEUS}");
  });

  it("has unique panel ids", () => {
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

/** promtool from $PROMTOOL or PATH (Debian: apt-get install prometheus). */
describe("settings named in the kits exist", () => {
  /** Environment variables a config schema declares (`env: "NAME"`). */
  const schemaEnv = (file: string) => new Set([...read(file).matchAll(/\benv:\s*"([A-Z0-9_]+)"/g)].map((m) => m[1]));
  const NAME = String.raw`\b(?:FARM_[A-Z0-9_]+|COORDINATOR_URL|NATS_URL|NIX_[A-Z_]+)\b`;
  /** Farm variables a kit file mentions anywhere (prose included). */
  const mentioned = (file: string) => [...read(file).matchAll(new RegExp(NAME, "g"))].map((m) => m[0]);
  /** Farm variables a kit file sets: `NAME=value` (env files, Dockerfile, shell) or `- name: NAME` (Kubernetes). */
  const assigned = (file: string) =>
    [...read(file).matchAll(new RegExp(String.raw`(?:name:\s*)(${NAME})|(${NAME})=`, "g"))].map((m) => m[1] ?? m[2]);
  const worker = new Set([...schemaEnv("worker/config.ts"), "FARM_WORKER_CONFIG"]);
  const coordinator = schemaEnv("coordinator/config.ts");
  const either = new Set([...worker, ...coordinator]);
  // Which program reads the variables each file sets.
  const kits: [string, Set<string>][] = [
    ["deploy/systemd/worker.env.example", worker],
    ["deploy/systemd/tmpnix-worker.service", worker],
    ["deploy/kubernetes/worker.yaml", worker],
    ["deploy/kubernetes/Dockerfile", worker],
    ["deploy/glitch/README.md", worker],
    ["deploy/glitch/env.example", worker],
    ["deploy/systemd/coordinator.env.example", coordinator],
    ["deploy/systemd/tmpnix-coordinator.service", coordinator],
    ["deploy/prometheus/prometheus.yml", either],
    ["deploy/prometheus/alerts.yml", either],
    ["deploy/README.md", either],
  ];

  it("finds the schemas' variables", () => {
    expect(worker).toContain("COORDINATOR_URL");
    expect(coordinator).toContain("FARM_METRICS_LISTEN");
    expect(assigned("deploy/kubernetes/worker.yaml")).toContain("FARM_TOKEN");
    expect(assigned("deploy/systemd/coordinator.env.example")).toContain("FARM_LISTEN");
  });

  it.each(kits)("%s", (file, reader) => {
    expect(assigned(file).filter((name) => !reader.has(name))).toEqual([]);
    expect(mentioned(file).filter((name) => !either.has(name))).toEqual([]);
  });
});

const systemdAnalyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].find((p) => spawnSync(p, ["--version"]).status === 0);

it.skipIf(!systemdAnalyze)("systemd accepts both units (skipped without systemd-analyze)", () => {
  const units = ["tmpnix-coordinator.service", "tmpnix-worker.service"].map((u) => path.join(here, "systemd", u));
  const r = spawnSync(systemdAnalyze!, ["verify", ...units], { encoding: "utf8" });
  // Whether /usr/bin/node exists depends on the host, not on the unit files.
  const problems = `${r.stdout}${r.stderr}`.split("\n").filter((l) => l.trim() && !/is not executable/.test(l));
  expect(problems).toEqual([]);
});

/** promtool from $PROMTOOL or PATH (Debian: apt-get install prometheus). */
const promtool = [process.env.PROMTOOL, ...(process.env.PATH ?? "").split(":").map((d) => path.join(d, "promtool"))].find(
  (p) => p && spawnSync(p, ["--version"]).status === 0,
);

/** Runs promtool; fails the test with its output when it exits non-zero. */
function runPromtool(args: string[]): string {
  const r = spawnSync(promtool!, args, { encoding: "utf8" });
  const output = `${r.stdout}${r.stderr}`;
  expect(r.status, `promtool ${args.join(" ")}\n${output}`).toBe(0);
  return output;
}

if (!promtool) {
  console.warn("deploy.test.ts: promtool not found on PATH or $PROMTOOL; skipping the promtool checks (apt-get install prometheus)");
  it.skip("promtool checks: SKIPPED because promtool is not installed (apt-get install prometheus)", () => {});
} else {
  describe("promtool accepts the Prometheus kit", () => {
    // Made in beforeAll, not when the file is collected: `vitest list` runs no hooks, and would leave it behind.
    let tmp: string;
    beforeAll(() => {
      tmp = mkdtempSync(path.join(os.tmpdir(), "tmpnix-deploy-"));
    });
    afterAll(() => tmp && rmSync(tmp, { recursive: true, force: true }));

    it("check config (and the rule file it names)", () => {
      expect(runPromtool(["check", "config", path.join(repo, PROM_CONFIG)])).toMatch(/SUCCESS: \d+ rules found/);
    });

    it("check rules", () => {
      expect(runPromtool(["check", "rules", path.join(repo, ALERTS)])).toMatch(/SUCCESS: [1-9]\d* rules found/);
    });

    it("test rules: each alert fires on its scenario and stays quiet otherwise", () => {
      expect(runPromtool(["test", "rules", path.join(repo, ALERT_TESTS)])).toContain("SUCCESS");
    });

    it("every dashboard query is valid PromQL", () => {
      // Grafana's variables are not PromQL: substitute plausible values, then let
      // promtool parse each query as a recording rule.
      const rules = queries.map(
        (q, i) => `      - record: dashboard:query_${i}\n        expr: ${JSON.stringify(q.expr.replaceAll("$__rate_interval", "1m").replaceAll("$worker", ".*"))}\n`,
      );
      const file = path.join(tmp, "dashboard-queries.yml");
      writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join("")}`);
      expect(runPromtool(["check", "rules", file])).toContain(`SUCCESS: ${queries.length} rules found`);
    });
  });
}
