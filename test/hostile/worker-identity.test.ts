// A per-worker token (a 'worker NAME TOKEN' line of the tokens file) names its
// worker: it joins as NAME only, so one worker's token can't push another off.
import { afterAll, beforeAll, expect, it } from "vitest";
import { rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { FarmCluster } from "../harness/cluster.js";

const ALICE = "alice-token-0123456789abcdef";
const TOKENS = path.join("/tmp", `farm-tokens-${process.pid}`);
let farm: FarmCluster;

beforeAll(async () => {
  writeFileSync(TOKENS, `worker alice ${ALICE}\n`);
  farm = await FarmCluster.start({ workers: [], coordinatorEnv: { FARM_TOKENS_FILE: TOKENS } });
}, 120_000);

afterAll(async () => {
  await farm?.stop();
  rmSync(TOKENS, { force: true });
});

it("refuses a worker token used under another worker's id, with a clear line", async () => {
  const impostor = farm.startWorker({ name: "bob", env: { FARM_TOKEN: ALICE } });
  const code = await Promise.race([impostor.exited, new Promise<number>((r) => setTimeout(() => r(-1), 30_000))]);
  expect(code).not.toBe(0);
  expect(code).not.toBe(-1);
  expect(impostor.log()).toContain("may not join as 'bob'");
  await farm.killWorker("bob");
}, 60_000);

it("lets the same token join under its own name", async () => {
  farm.startWorker({ name: "alice", env: { FARM_TOKEN: ALICE } });
  await farm.waitForWorkers(1);
  const workers = JSON.parse((await farm.cli(["workers", "--json"])).stdout) as { workerId: string }[];
  expect(workers.map((w) => w.workerId)).toEqual(["alice"]);
}, 60_000);
