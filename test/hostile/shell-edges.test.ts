// Edges of the shell, for real (NATS, gRPC, a fake worker, an isolated one):
// a build log full of terminal escape sequences is shown by `farm logs` as
// text, not played to the terminal; a worker that says its builder is done gets
// its next build while it uploads; and SIGTERM stops a coordinator that has a
// worker stream open within systemd's stop timeout (TimeoutStopSec=30).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { FarmCluster, REPO } from "../harness/cluster.js";
import type { Lease } from "../../proto/gen/farm.js";
import { BuildStatus, FakeWorker } from "./fake-worker.js";
import { startHealthyJob } from "./support.js";

let farm: FarmCluster;
let dir: string;
let healthy: ReturnType<typeof startHealthyJob>;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "farm-shell-edges-"));
  writeFileSync(
    path.join(dir, "loud.nix"),
    `let mk = import ${REPO}/test/fixtures/sh-derivation.nix; in { loudFake = mk { name = "loud-1.0"; system = "edge-fake"; script = "exit 1"; }; ` +
      `pair = [ (mk { name = "upload-a-1.0"; system = "edge-upload"; script = "exit 1"; }) (mk { name = "upload-b-1.0"; system = "edge-upload"; script = "exit 1"; }) ]; }\n`,
  );
  farm = await FarmCluster.start({ workers: [] });
  healthy = startHealthyJob(farm, farm.token);
}, 120_000);

afterAll(async () => {
  await farm?.stop(Boolean(process.env.KEEP_TEST_FILES));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("shell edges", () => {
  it("`farm logs` shows the escape sequences a worker streamed as text", async () => {
    // Nix already strips most escapes from a real build's output; a worker can send anything, so one does.
    const w = new FakeWorker(farm.coordinatorAddress, farm.token);
    await w.join("loud-worker", { systems: ["edge-fake"] });
    let held: Lease[] = [];
    w.keepAlive(1000, () => held);
    const r = await farm.cli(["submit", `${path.join(dir, "loud.nix")}#loudFake`, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const lease = (await w.assignment()).lease!;
    held = [lease];
    w.send({ msg: { $case: "log", value: { lease, lines: ["before \x1b]0;pwned\x07 \x1b[2J after"] } } });
    const since = w.received.length;
    w.result(lease, BuildStatus.BUILD_STATUS_FAILED, "loud on purpose");
    await w.ack(lease, since);
    w.close();
    const logs = await farm.cli(["logs", lease.drvPath]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain("before \\x1b]0;pwned\\x07 \\x1b[2J after");
    expect(logs.stdout).not.toContain("\x1b");
  }, 60_000);

  it("a worker whose builder is done gets its next build while it uploads; a notice of a lease not its own changes nothing", async () => {
    const w = new FakeWorker(farm.coordinatorAddress, farm.token);
    await w.join("upload-worker", { systems: ["edge-upload"], maxBuilds: 1 });
    let held: Lease[] = [];
    w.keepAlive(1000, () => held);
    const r = await farm.cli(["submit", `${path.join(dir, "loud.nix")}#pair`, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const first = (await w.assignment()).lease!;
    held = [first];
    w.send({ msg: { $case: "built", value: { lease: { ...first, epoch: first.epoch + 1 } } } });
    await new Promise((res) => setTimeout(res, 300));
    expect(w.received.filter((m) => m.msg?.$case === "assign")).toHaveLength(1); // still full
    w.send({ msg: { $case: "built", value: { lease: first } } });
    const second = (await w.next("assign", (a) => a.lease?.drvPath !== first.drvPath, 10_000)).lease!;
    held = [first, second];
    for (const lease of [first, second]) {
      const since = w.received.length;
      w.result(lease, BuildStatus.BUILD_STATUS_FAILED, "failing on purpose");
      expect(await w.ack(lease, since)).toMatchObject({ accepted: true });
    }
    held = [];
    w.close();
  }, 60_000);

  it("meanwhile the healthy job beside it built and completed", async () => {
    await healthy.succeeded();
  }, 120_000);

  it("SIGTERM stops the coordinator with a worker stream open, well inside a 30 s stop timeout", async () => {
    const c = farm.coordinator!;
    const exited = new Promise<number | null>((resolve) => c.once("exit", (code) => resolve(code)));
    c.kill("SIGTERM");
    // Not a speed target: a coordinator held up by its open streams would never exit at all.
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r("still running after 25 s"), 25_000))]);
    expect(code).toBe(0);
  }, 40_000);
});
