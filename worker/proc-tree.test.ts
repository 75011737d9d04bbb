import { spawn } from "node:child_process";
import { describe, expect, it, vi } from "vitest";
import { ProcMonitor } from "./memory-probe.js";
import { parseProcStat, processMemoryBytes, ProcTree, statusKb, treeMembers, type ProcInfo } from "./proc-tree.js";

describe("parseProcStat", () => {
  it("reads pid, parents, session and RSS even with odd command names", () => {
    const stat = "1234 (we (ird) name) S 1000 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 555 10000000 256 18446744073709551615";
    expect(parseProcStat(stat)).toEqual({ pid: 1234, state: "S", ppid: 1000, pgrp: 1234, session: 1234, rssBytes: 256 * 4096 });
  });
});

describe("treeMembers", () => {
  const p = (pid: number, ppid: number, session: number, rssBytes = 1): ProcInfo => ({ pid, ppid, pgrp: pid, session, state: "S", rssBytes });

  it("finds descendants and orphans that kept the builder's session", () => {
    const sessions = new Set<number>();
    // worker 10 (session 5) -> nix 20 (session 20) -> builder 30 (session 30) -> 31
    const before = [p(10, 1, 5), p(20, 10, 20), p(30, 20, 30), p(31, 30, 30), p(99, 1, 99)];
    expect(treeMembers(before, 20, sessions, 5).map((x) => x.pid).sort()).toEqual([20, 30, 31]);
    // nix and the builder died; 31 was re-parented to init but is still in session 30
    const after = [p(10, 1, 5), p(31, 1, 30), p(99, 1, 99)];
    expect(treeMembers(after, 20, sessions, 5).map((x) => x.pid)).toEqual([31]);
  });
});

describe("ProcTree", () => {
  it("measures and kills a real process tree, including a child in its own session", async () => {
    const child = spawn("/bin/sh", ["-c", "setsid sleep 30 & sleep 30 & wait"], { detached: true, stdio: "ignore" });
    const tree = new ProcTree(child.pid!);
    await vi.waitFor(() => expect(tree.members().length).toBeGreaterThanOrEqual(3), { timeout: 10_000, interval: 50 });
    expect(tree.rssBytes()).toBeGreaterThan(0);
    await tree.killAll();
    await vi.waitFor(() => expect(tree.members().filter((m) => m.state !== "Z")).toEqual([]), { timeout: 10_000, interval: 50 });
  });
});

describe("process memory", () => {
  it("reads RssAnon and RssShmem from status, and nothing for a process that is gone", () => {
    const status = "Name:\tcc1\nVmRSS:\t  9000 kB\nRssAnon:\t  7000 kB\nRssFile:\t  1900 kB\nRssShmem:\t   100 kB\n";
    expect([statusKb(status, "RssAnon"), statusKb(status, "RssShmem"), statusKb(status, "Missing")]).toEqual([7000, 100, undefined]);
    const self = processMemoryBytes(process.pid, 1);
    expect(self?.accounting).toBe("anon");
    expect(self!.bytes).toBeGreaterThan(0);
    expect(self!.bytes).toBeLessThan(process.memoryUsage().rss); // the mapped binary and libraries are left out
    expect(processMemoryBytes(2 ** 22 + 1, 1)).toBeUndefined();
  });
});

describe("ProcMonitor", () => {
  it("has measured a build only once a sample caught more than its root alive", async () => {
    const quick = spawn("/bin/sh", ["-c", "exit 0"], { detached: true, stdio: "ignore" });
    const unseen = new ProcMonitor(0);
    unseen.enter(quick.pid!);
    await new Promise((r) => quick.on("exit", r));
    expect(unseen.sample()).toMatchObject({ measured: false, peakBytes: 0 });

    const slow = spawn("/bin/sh", ["-c", "sleep 30; exit 0"], { detached: true, stdio: "ignore" });
    const seen = new ProcMonitor(1);
    seen.enter(slow.pid!);
    await vi.waitFor(() => expect(seen.sample()).toMatchObject({ measured: true, overLimit: true }), { timeout: 10_000, interval: 50 });
    expect(seen.sample().peakBytes).toBeGreaterThan(0);
    await seen.close();
  });
});
