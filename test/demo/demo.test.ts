// The README's first command (the main job) must keep working: it starts a
// farm, builds the demo DAG on three isolated workers and installs the result
// as an unprivileged user, twice (stock Nix, then `farm install`).
import { expect, it } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";
import { REPO } from "../harness/cluster.js";

it("deploy/local/demo.sh builds the demo and installs it without root", async () => {
  // dist/ is already built by `npm test`; rebuilding it under running tests would race them.
  const { stdout, stderr } = await promisify(execFile)("bash", [path.join(REPO, "deploy/local/demo.sh")], {
    env: { ...process.env, FARM_DEMO_NO_BUILD: "1" },
    maxBuffer: 16 * 1024 * 1024,
    timeout: 280_000,
  });
  const output = stdout + stderr;
  const runs = output.split("\n").filter((l) => l === "hello from tmpnix farm (libgreet 1.0, 2 programs)");
  expect(runs, output).toHaveLength(2);
  expect(output).toContain("demo: done");
  expect(output).toMatch(/job j-\S+ succeeded/);
}, 300_000);
