// How a finished `nix-store -r` maps onto a build outcome.
import { describe, expect, it } from "vitest";
import { classifyBuild } from "./nix-executor.js";
import type { NixBuildResult } from "./nix-build.js";
import type { AssignmentSpec } from "../proto/types.js";

const assignment: AssignmentSpec = { lease: { drvPath: "/tmp/nix/store/00000000000000000000000000000000-x.drv", epoch: 1 }, name: "x", outputs: {}, inputPaths: [], cores: 1, memoryLimitBytes: 0, timeoutMs: 0 };
const result = (patch: Partial<NixBuildResult>): NixBuildResult => ({ exitCode: 0, peakMemoryBytes: 0, memoryMeasured: true, outOfMemory: false, timedOut: false, aborted: false, diskFull: false, monitor: "proc", ...patch });

describe("classifyBuild", () => {
  it("a builder that exits non-zero fails the derivation for good", () => {
    expect(classifyBuild(result({ exitCode: 100, error: "builder for '/tmp/nix/store/x.drv' failed with exit code 2" }), assignment)?.outcome).toBe("failed");
  });

  it("a builder killed by a signal is retried elsewhere, not failed", () => {
    expect(classifyBuild(result({ exitCode: 100, error: "builder for '/tmp/nix/store/x.drv' failed due to signal 9 (Killed)" }), assignment)?.outcome).toBe("worker-error");
  });

  it("memory, time, disk and aborts keep their own outcomes", () => {
    expect(classifyBuild(result({ exitCode: 100, outOfMemory: true, error: "failed due to signal 9 (Killed)" }), assignment)?.outcome).toBe("out-of-memory");
    expect(classifyBuild(result({ exitCode: 1, diskFull: true, error: "x" }), assignment)?.outcome).toBe("disk-full");
    expect(classifyBuild(result({ aborted: true }), assignment)?.outcome).toBe("aborted");
    expect(classifyBuild(result({ exitCode: 0 }), assignment)).toBeUndefined();
  });
});
