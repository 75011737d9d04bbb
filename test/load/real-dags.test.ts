// Real nixpkgs-20.09 DAG shapes through the live coordinator: the gcc (135)
// and chromium (1,344) closures and a glibc-multi sample with i686-linux nodes
// are submitted over gRPC and "built" by workers whose executor is swapped for
// the fake one (this machine has no network to fetch sources). Everything else
// is real: NATS, gRPC, the cache (fake outputs are uploaded and verified).
// The graphs use /nix/store paths, so this farm runs with that store dir.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import path from "node:path";
import { FarmCluster, REPO } from "../harness/cluster.js";
import { loadJsonlDag } from "../../coordinator/cli/dag/mod.js";

const DAGS = path.join(REPO, "test/fixtures/dags");
const STORE = { NIX_STORE_DIR: "/nix/store", NIX_STATE_DIR: "/tmp/nix/var/nix", NIX_LOG_DIR: "/tmp/nix/var/log/nix" };
// Fake executors write nothing to the store; the store dir is the host's /nix/store
// only so that free-disk probes see a real filesystem.
const fakeWorker = (name: string, features = "") => ({
  name,
  maxBuilds: 4,
  env: { ...STORE, FARM_EXECUTOR: "fake", FARM_FAKE_BUILD_MS: "2", FARM_FEATURES: features },
});

let farm: FarmCluster;

beforeAll(async () => {
  farm = await FarmCluster.start({
    workers: [fakeWorker("small-1"), fakeWorker("small-2"), fakeWorker("big", "big-parallel,kvm")],
    // Recorded DAGs come without their .drv files, and fake executors build nothing.
    coordinatorEnv: { NIX_STORE_DIR: "/nix/store", FARM_TRUST_SUBMITTED_NODES: "1" },
  });
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
});

async function submitDag(file: string) {
  const r = await farm.cli(["submit", "--dag", path.join(DAGS, file), "--follow", "--json"], { env: { NIX_STORE_DIR: "/nix/store" } });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
}

describe("real nixpkgs DAG shapes", () => {
  it.each([
    ["gcc.jsonl", 135],
    ["glibc-multi.jsonl.xz", 208],
    ["chromium.jsonl.xz", 1344],
  ])("%s: all %i derivations are scheduled and built once", async (file, count) => {
    const nodes = await loadJsonlDag(path.join(DAGS, file));
    expect(nodes.length).toBe(count);
    const job = await submitDag(file);
    expect(job.state).toBe("succeeded");
    // Derivations already done by an earlier job in this farm are not counted again.
    expect(job.counts.total).toBeLessThanOrEqual(count);
    expect(job.counts.done).toBe(job.counts.total);
  }, 300_000);

  it("built builtin fetches, i686-linux and big-parallel derivations where they fit", async () => {
    const reports = farm
      .coordinatorLog()
      .split("\n")
      .filter((l) => l.includes('"assigned"'))
      .map((l) => JSON.parse(l) as { worker: string; drv: string });
    const nodes = new Map((await loadJsonlDag(path.join(DAGS, "chromium.jsonl.xz"))).concat(await loadJsonlDag(path.join(DAGS, "glibc-multi.jsonl.xz"))).map((n) => [n.drvPath, n]));
    const assigned = reports.map((r) => ({ worker: r.worker, node: nodes.get(r.drv) })).filter((r) => r.node);
    expect(assigned.some((a) => a.node!.system === "builtin")).toBe(true);
    expect(assigned.some((a) => a.node!.system === "i686-linux")).toBe(true);
    const bigParallel = assigned.filter((a) => a.node!.requiredSystemFeatures.includes("big-parallel"));
    expect(bigParallel.length).toBeGreaterThan(0);
    for (const a of bigParallel) expect(a.worker).toBe("big");
    // Built once: no derivation had two results accepted (a backup copy of a long build may also finish; it is rejected).
    const accepted = new Map<string, number>();
    for (const l of farm.coordinatorLog().split("\n").filter((l) => l.includes('"result accepted"'))) {
      const r = JSON.parse(l) as { drv: string };
      accepted.set(r.drv, (accepted.get(r.drv) ?? 0) + 1);
    }
    expect(accepted.size).toBeGreaterThan(0);
    expect([...accepted.values()].filter((n) => n > 1)).toEqual([]);
  });

  it("a second submit of a loaded DAG builds nothing", async () => {
    const before = farm.coordinatorLog().split("\n").filter((l) => l.includes('"assigned"')).length;
    const job = await submitDag("gcc.jsonl");
    expect(job.state).toBe("succeeded");
    expect(farm.coordinatorLog().split("\n").filter((l) => l.includes('"assigned"')).length).toBe(before);
  }, 120_000);
});
