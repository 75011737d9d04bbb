import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { BuildStatus, WorkerMessage, type BuildResult } from "../gen/farm.js";
import type { BuildOutcome } from "../types.js";
import { assignmentFromWire, assignmentToWire, drainFromWire, INLINE_NAR_MAX_BYTES, INLINE_NARS_MAX_BYTES, drainToWire, heartbeatFromWire, heartbeatToWire, joinToWire, leaseFromWire, outcomeToStatus, reportFromWire, resultToWire, workerInfoFromJoin } from "./worker-protocol.js";

const S = "/tmp/nix/store";
const drv = `${S}/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12.drv`;
const out = `${S}/zyxwvsrqpnmlkjihgfdcba9876543210-hello-2.12`;

describe("assignmentFromWire", () => {
  const wire = { lease: { drvPath: drv, epoch: 4 }, outputs: { out }, inputPaths: [`${S}/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-glibc`], cores: 0, memoryLimitBytes: 1 << 30, timeoutMs: 0, name: "", estimatedDurationMs: 0, uploadCredential: "" };

  it("converts and fills a name from the drv path", () => {
    const a = assignmentFromWire(wire, S);
    expect(a).toEqual({ lease: { drvPath: drv, epoch: 4 }, name: "hello-2.12", outputs: { out }, inputPaths: wire.inputPaths, cores: 1, memoryLimitBytes: 1 << 30, timeoutMs: 0, estimatedDurationMs: 0 });
  });

  it("rejects assignments without a lease, outputs, or with paths outside the store", () => {
    expect(() => assignmentFromWire({ ...wire, lease: undefined }, S)).toThrow(InvalidInputError);
    expect(() => assignmentFromWire({ ...wire, outputs: {} }, S)).toThrow(/names no outputs/);
    expect(() => assignmentFromWire({ ...wire, inputPaths: ["/nix/store/x-y"] }, S)).toThrow(/outside \/tmp\/nix\/store/);
    expect(() => assignmentFromWire({ ...wire, lease: { drvPath: "/tmp/x", epoch: 1 } }, S)).toThrow(/not a .drv/);
  });
});

describe("outgoing messages", () => {
  it("maps every outcome to its own status", () => {
    const outcomes: BuildOutcome[] = ["succeeded", "failed", "out-of-memory", "inputs-unavailable", "disk-full", "aborted", "upload-failed", "timed-out", "worker-error", "declined"];
    const statuses = outcomes.map(outcomeToStatus);
    expect(new Set(statuses).size).toBe(outcomes.length);
    expect(statuses).not.toContain(BuildStatus.BUILD_STATUS_UNSPECIFIED);
    expect(outcomeToStatus("out-of-memory")).toBe(BuildStatus.BUILD_STATUS_OUT_OF_MEMORY);
  });

  it("survives a protobuf round trip", () => {
    const msgs = [
      resultToWire({ lease: { drvPath: drv, epoch: 2 }, outcome: "succeeded", outputs: [{ name: "out", path: out, narHash: "sha256:abc", narSize: 99 }], durationMs: 1234.6, peakMemoryBytes: 5e8, cores: 2, error: "" }),
      joinToWire({ workerId: "w", softwareVersion: "1", systems: ["x86_64-linux"], features: [], cores: 2, memoryBytes: 2 ** 33, freeDiskBytes: 1, storeDir: S, uptimeSeconds: 5, maxLifetimeSeconds: 0, maxBuilds: 1 }, [{ drvPath: drv, epoch: 3 }]),
      heartbeatToWire({ freeMemoryBytes: 1, freeDiskBytes: 2, uptimeSeconds: 3, running: [{ lease: { drvPath: drv, epoch: 3 }, memoryBytes: 10, peakMemoryBytes: 20 }] }),
    ];
    for (const m of msgs) expect(WorkerMessage.decode(WorkerMessage.encode(m).finish())).toEqual(m);
    expect((msgs[0].msg as { value: { durationMs: number } }).value.durationMs).toBe(1235);
  });
});

describe("both sides through one converter", () => {
  const info = { workerId: "w", softwareVersion: "1", systems: ["x86_64-linux"], features: ["kvm"], cores: 2, memoryBytes: 2 ** 33, freeDiskBytes: 1, storeDir: S, uptimeSeconds: 5, maxLifetimeSeconds: 0, maxBuilds: 1, nixVersion: "2.8.0", nixSource: "cache /tmp/nix/store/x-nix-2.8.0" };
  const lease = { drvPath: drv, epoch: 3 };
  // Through protobuf bytes, as the other side sees it.
  const value = <T>(m: WorkerMessage) => WorkerMessage.decode(WorkerMessage.encode(m).finish()).msg!.value as T;

  it("what the worker sends, the coordinator reads back unchanged", () => {
    expect(workerInfoFromJoin(value(joinToWire(info, [lease])), S)).toEqual({ info, running: [lease] });
    // Free text a worker says about its Nix is shown in `farm workers`: one line, no escape sequences, bounded.
    const shown = workerInfoFromJoin(value(joinToWire({ ...info, nixSource: "a\x1b[2Jb\n".repeat(200) }, [])), S).info.nixSource!;
    expect(shown).toMatch(/^a \[2Jb /);
    expect(shown.length).toBe(400);
    const report = { lease, outcome: "out-of-memory" as const, outputs: [{ name: "out", path: out, narHash: `sha256:${"0".repeat(52)}`, narSize: 99 }], durationMs: 1235, peakMemoryBytes: 5e8, cores: 2, error: "killed" };
    expect(reportFromWire(value(resultToWire(report)), S)).toEqual(report);
    expect(reportFromWire(value(resultToWire({ ...report, error: "\x1b[2Jkilled\x07 here\nsecond line" })), S).error).toBe(" [2Jkilled  here");
    expect(heartbeatFromWire(value(heartbeatToWire({ freeMemoryBytes: 1, freeDiskBytes: 2, uptimeSeconds: 3, running: [{ lease, memoryBytes: 10, peakMemoryBytes: 20 }] })), S)).toEqual({
      freeMemoryBytes: 1,
      freeDiskBytes: 2,
      uptimeSeconds: 3,
      running: [lease],
      usage: [{ lease, memoryBytes: 10, peakMemoryBytes: 20 }],
    });
    expect(drainFromWire(value(drainToWire("SIGTERM", 42, [lease])), S)).toEqual({ reason: "SIGTERM", deadlineUnixMs: 42, handedBack: [lease] });
  });

  it("a small output's NAR crosses inline with its references; the coordinator holds it to its size, limits and names", () => {
    const nar = Buffer.from("nix-archive-1 pretend");
    const dep = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-glibc";
    const inlineOut = { name: "out", path: out, narHash: `sha256:${"0".repeat(52)}`, narSize: nar.length, inline: { nar, references: [dep] } };
    const report = { lease, outcome: "succeeded" as const, outputs: [inlineOut], durationMs: 80, peakMemoryBytes: 1, cores: 1, error: "" };
    const wire = value<BuildResult>(resultToWire(report));
    const read = reportFromWire(wire, S);
    expect(read).toEqual(report);
    expect(Buffer.from(read.outputs[0].inline!.nar).toString()).toBe("nix-archive-1 pretend");
    const withOutput = (o: Partial<BuildResult["outputs"][number]>) => ({ ...wire, outputs: [{ ...wire.outputs[0], ...o }] });
    expect(() => reportFromWire(withOutput({ narSize: nar.length + 1 }), S)).toThrow(/inline NAR of 21 bytes, reported 22/);
    expect(() => reportFromWire(withOutput({ references: ["../../etc/passwd"] }), S)).toThrow(/bad reference/);
    expect(() => reportFromWire(withOutput({ nar: Buffer.alloc(0) }), S)).toThrow(/references without an inline NAR/);
    const big = Buffer.alloc(INLINE_NAR_MAX_BYTES + 1);
    expect(() => reportFromWire(withOutput({ nar: big, narSize: big.length }), S)).toThrow(/at most 65536 bytes each/);
    // Each within its limit, but more than a report may carry in all.
    const most = Buffer.alloc(INLINE_NAR_MAX_BYTES);
    const many = Array.from({ length: INLINE_NARS_MAX_BYTES / INLINE_NAR_MAX_BYTES + 1 }, (_, i) => ({ ...wire.outputs[0], name: `o${i}`, nar: most, narSize: most.length, references: [] }));
    expect(() => reportFromWire({ ...wire, outputs: many }, S)).toThrow(/1048576 in all/);
  });

  it("a peak that was not measured crosses as 'not measured', and both sides refuse a peak that claims both", () => {
    const report = { lease, outcome: "succeeded" as const, outputs: [], durationMs: 80, peakMemoryBytes: 0, memoryNotMeasured: true, cores: 1, error: "" };
    const wire = value<BuildResult>(resultToWire(report));
    expect(wire.memoryNotMeasured).toBe(true);
    expect(reportFromWire(wire, S)).toEqual(report);
    // A worker older than the field sends false: measured, as it always claimed.
    expect(reportFromWire({ ...wire, memoryNotMeasured: false }, S).memoryNotMeasured).toBeUndefined();
    expect(() => resultToWire({ ...report, peakMemoryBytes: 1 })).toThrow(InvalidInputError);
    expect(() => reportFromWire({ ...wire, peakMemoryBytes: 1 }, S)).toThrow(InvalidInputError);
  });

  it("what the coordinator assigns, the worker reads back unchanged", () => {
    const spec = { lease, name: "hello-2.12", outputs: { out }, inputPaths: [], cores: 2, memoryLimitBytes: 1 << 30, timeoutMs: 0, estimatedDurationMs: 1500 };
    expect(assignmentFromWire(assignmentToWire(spec), S)).toEqual(spec);
  });

  it("both sides refuse a lease with a bad epoch or outside the store dir", () => {
    for (const bad of [{ drvPath: drv, epoch: 0 }, { drvPath: drv.replace(S, "/nix/store"), epoch: 1 }]) {
      expect(() => leaseFromWire(bad, S)).toThrow(InvalidInputError);
      expect(() => assignmentFromWire({ lease: bad, outputs: { out }, inputPaths: [], cores: 1, memoryLimitBytes: 0, timeoutMs: 0, name: "", estimatedDurationMs: 0, uploadCredential: "" }, S)).toThrow(InvalidInputError);
    }
  });
});
