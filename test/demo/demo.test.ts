// The README's first command (the main job) must keep working: it starts a
// farm, builds the demo DAG on three isolated workers and installs the result
// as an unprivileged user, twice (stock Nix, then `farm install demo` by name).
import { afterAll, beforeAll, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { chmodSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { deleteNatsPrefix, REPO } from "../harness/cluster.js";
import { freePort } from "../harness/ports.js";

// The demo runs on free ports, in a temp dir and under a NATS prefix of the test's own, all removed after.
// Made in beforeAll, not when the file is collected: `vitest list` runs no hooks, and would leave it behind.
let tmp: string;
const natsPrefix = `demotest${process.pid}-`;
beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), "tmpnix-demo-test-"));
  chmodSync(tmp, 0o755); // user nobody reaches its install dirs below it
});
afterAll(async () => {
  await deleteNatsPrefix(natsPrefix);
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

it("deploy/local/demo.sh builds the demo and installs it without root", async () => {
  // dist/ is already built by `npm test`; rebuilding it under running tests would race them.
  const { stdout, stderr } = await promisify(execFile)("bash", [path.join(REPO, "deploy/local/demo.sh")], {
    env: {
      ...process.env,
      FARM_DEMO_NO_BUILD: "1",
      FARM_DEMO_CLEAN: "1",
      FARM_DEMO_NATS_PREFIX: natsPrefix,
      FARM_DEMO_PORTS: `${await freePort()} ${await freePort()} ${await freePort()}`,
      TMPDIR: tmp,
    },
    maxBuffer: 16 * 1024 * 1024,
    timeout: 280_000,
  });
  const output = stdout + stderr;
  const runs = output.split("\n").filter((l) => l === "hello from tmpnix farm (libgreet 1.0, 2 programs)");
  expect(runs, output).toHaveLength(2);
  expect(output).toContain("demo: done");
  expect(output).toContain("'farm install demo' with only the cache URL and key");
  expect(output).toMatch(/^demo 1\.0 /m); // farm list
  expect(output).toMatch(/job j-\S+ succeeded/);
  expect(readdirSync(tmp)).toEqual([]); // FARM_DEMO_CLEAN removed what it made
}, 300_000);
