import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { cgroupPathFor, defaultSystems, detectCores, detectMemoryBytes, memoryForBuilds, WORKER_SELF_CUSHION_BYTES, freeDiskBytes, machineUptimeSeconds, parseCpuQuota, parseMeminfo, parseMemoryLimit, parseProcCgroup } from "./host-probe.js";

describe("cgroup parsing", () => {
  const v1 = "12:pids:/x\n4:memory:/process_api/abc\n3:cpu,cpuacct:/box\n0::/\n";

  it("finds the v1 path of a controller, or the unified path", () => {
    const entries = parseProcCgroup(v1);
    expect(cgroupPathFor(entries, "memory")).toEqual({ version: 1, path: "/process_api/abc" });
    expect(cgroupPathFor(entries, "cpu")).toEqual({ version: 1, path: "/box" });
    expect(cgroupPathFor(parseProcCgroup("0::/user.slice/app\n"), "memory")).toEqual({ version: 2, path: "/user.slice/app" });
  });

  it("turns CPU quotas into whole CPUs", () => {
    expect(parseCpuQuota("150000", "100000", undefined)).toBe(2);
    expect(parseCpuQuota("-1", "100000", undefined)).toBeUndefined();
    expect(parseCpuQuota(undefined, undefined, "max 100000")).toBeUndefined();
    expect(parseCpuQuota(undefined, undefined, "50000 100000")).toBe(1);
  });

  it("treats v1's huge number and v2's 'max' as no memory limit", () => {
    expect(parseMemoryLimit("9223372036854771712\n")).toBeUndefined();
    expect(parseMemoryLimit("max\n")).toBeUndefined();
    expect(parseMemoryLimit("536870912\n")).toBe(512 * 1024 ** 2);
  });

  it("reads meminfo fields in bytes", () => {
    expect(parseMeminfo("MemTotal:       1000 kB\nMemAvailable:    500 kB\n", "MemAvailable")).toBe(512000);
  });
});

describe("detection from a fake cgroup tree", () => {
  let dir: string | undefined;
  afterEach(() => dir && rmSync(dir, { recursive: true, force: true }));

  it("uses the v1 memory limit and CPU quota of the own cgroup", () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "probe-"));
    writeFileSync(path.join(dir, "self-cgroup"), "4:memory:/box\n2:cpu,cpuacct:/box\n");
    mkdirSync(path.join(dir, "memory/box"), { recursive: true });
    mkdirSync(path.join(dir, "cpu/box"), { recursive: true });
    writeFileSync(path.join(dir, "memory/box/memory.limit_in_bytes"), "268435456\n");
    writeFileSync(path.join(dir, "cpu/box/cpu.cfs_quota_us"), "100000\n");
    writeFileSync(path.join(dir, "cpu/box/cpu.cfs_period_us"), "100000\n");
    const roots = { procCgroup: path.join(dir, "self-cgroup"), sysfs: dir };
    expect(detectMemoryBytes(roots)).toBe(256 * 1024 ** 2);
    expect(detectCores(roots)).toBe(1);
  });

  it("offers builds the limit minus the worker's own process and a cushion", () => {
    const MiB = 1024 ** 2;
    expect(memoryForBuilds(256 * MiB, 40 * MiB)).toBe(256 * MiB - 40 * MiB - WORKER_SELF_CUSHION_BYTES);
    expect(memoryForBuilds(100 * MiB, 90 * MiB)).toBe(64 * MiB);
  });

  it("falls back to the machine when no cgroup limit is set", () => {
    const roots = { procCgroup: "/nonexistent", sysfs: "/nonexistent" };
    expect(detectCores(roots)).toBe(os.availableParallelism());
    expect(detectMemoryBytes(roots)).toBeGreaterThan(0);
  });
});

describe("host facts", () => {
  it("reads free disk of the nearest existing ancestor", () => {
    expect(freeDiskBytes("/tmp/does/not/exist/yet")).toBeGreaterThan(0);
  });

  it("counts uptime from an operator-given start when there is one", () => {
    expect(machineUptimeSeconds(1_000, 1_300_500)).toBe(300);
    expect(machineUptimeSeconds(2_000, 1_000_000)).toBe(0); // a start in the future is no negative uptime
    expect(machineUptimeSeconds(0)).toBeGreaterThanOrEqual(0);
  });

  it("names i686-linux as a secondary system on x86_64", () => {
    expect(defaultSystems("x64")).toEqual(["x86_64-linux", "i686-linux"]);
    expect(defaultSystems("arm64")).toEqual(["aarch64-linux"]);
  });
});
