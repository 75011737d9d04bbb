// The coordinator's CPU scheduling policy. Every file the cache writes takes a
// few trips through libuv's thread pool, each waking a pool thread, and the
// coordinator shares its CPUs with NATS and often with workers. Under
// SCHED_BATCH a task that wakes does not preempt the running one: each runs out
// its slice. Over a full nixpkgs graph run the main thread was switched out
// involuntarily 61 % less often, and runs were 1.12-1.18x as fast at 200
// workers (README, the coordinator at scale). Any user may choose SCHED_BATCH;
// no privilege is needed.
import { execa } from "execa";

/** The coordinator's choices: "batch" (SCHED_BATCH) or "inherit" (whatever it was started with). */
export const CPU_POLICIES = ["batch", "inherit"] as const;
export type CpuPolicy = (typeof CPU_POLICIES)[number];

/** What applying a policy did: nothing to do, applied, or why it could not be. */
export type CpuPolicyOutcome = { applied: false; reason: string } | { applied: true };

/**
 * Puts every thread of `pid` under SCHED_BATCH with `chrt` (util-linux). Threads
 * started later inherit it from the thread that starts them, so calling this
 * once at startup covers the thread pool libuv starts on first use.
 */
export async function useBatchScheduling(pid: number = process.pid): Promise<CpuPolicyOutcome> {
  const r = await execa("chrt", ["--all-tasks", "--batch", "--pid", "0", String(pid)], { reject: false, timeout: 10_000 });
  if (r.failed) return { applied: false, reason: r.code === "ENOENT" ? "chrt (util-linux) is not installed" : String(r.stderr ?? "").trim() || (r.shortMessage ?? "chrt failed") };
  return { applied: true };
}

/** Applies `policy` to this process; "inherit" leaves it as started. */
export async function applyCpuPolicy(policy: CpuPolicy, pid: number = process.pid): Promise<CpuPolicyOutcome> {
  if (policy === "inherit") return { applied: false, reason: "cpu-policy is inherit" };
  return useBatchScheduling(pid);
}
