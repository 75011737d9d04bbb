// proto/gen/farm.ts must be what `npm run proto` makes from proto/farm.proto
// (the contract and its code never drift apart).
import { expect, it } from "vitest";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

it("generated TypeScript matches proto/farm.proto", () => {
  const script = JSON.parse(readFileSync(path.join(repo, "package.json"), "utf8")).scripts.proto as string;
  const out = mkdtempSync(path.join(os.tmpdir(), "farm-proto-"));
  try {
    execFileSync("sh", ["-c", script.replace("--ts_proto_out=proto/gen", `--ts_proto_out=${out}`)], { cwd: repo, stdio: "pipe" });
    expect(readFileSync(path.join(out, "farm.ts"), "utf8")).toBe(readFileSync(path.join(repo, "proto/gen/farm.ts"), "utf8"));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
