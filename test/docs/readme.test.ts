// README.md tells the truth about configuration: its reference is generated
// from the schemas, and this fails when someone adds a field without it.
import { expect, it } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";
import { REPO } from "../harness/cluster.js";

it("README's configuration reference matches the config schemas", async () => {
  const run = promisify(execFile)(process.execPath, [path.join(REPO, "test/docs/config-reference.mjs"), "--check"]);
  await expect(run).resolves.toBeDefined();
});
