import { describe, expect, it } from "vitest";
import { BatchThread } from "./batch-thread.js";

/** A thread that answers each call with the call doubled, tagged with its group's size; "die" ends the thread. */
function doublerMain(): void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { parentPort } = require("node:worker_threads") as typeof import("node:worker_threads");
  parentPort!.on("message", ({ id, calls }: { id: number; calls: (number | "die" | "fail")[] }) => {
    if (calls.includes("die")) process.exit(3);
    parentPort!.postMessage({ id, results: calls.map((c) => (c === "fail" ? { error: { message: "refused", code: "EX" } } : { ok: `${Number(c) * 2}/${calls.length}` })) });
  });
}

describe("BatchThread", () => {
  it("sends the calls of one turn as one group and answers each in order", async () => {
    const thread = new BatchThread<number | "fail", string>({ name: "doubler", main: doublerMain });
    const first = await Promise.all([1, 2, 3].map((n) => thread.call(n)));
    expect(first).toEqual(["2/3", "4/3", "6/3"]);
    const later = await thread.call(21); // a later turn: a group of its own
    expect(later).toBe("42/1");
  });

  it("fails one call with its own error and answers the rest of its group", async () => {
    const thread = new BatchThread<number | "fail", string>({ name: "doubler", main: doublerMain });
    const outcomes = await Promise.allSettled([thread.call(1), thread.call("fail"), thread.call(3)]);
    expect(outcomes.map((o) => (o.status === "fulfilled" ? o.value : `${(o.reason as Error).message} ${(o.reason as { code?: string }).code}`))).toEqual(["2/3", "refused EX", "6/3"]);
  });

  it("fails the group of a thread that died, and starts a new thread for the next", async () => {
    const thread = new BatchThread<number | "die", string>({ name: "doubler", main: doublerMain });
    const lost = await Promise.allSettled([thread.call(1), thread.call("die")]);
    expect(lost.map((o) => o.status === "rejected" && (o.reason as Error).message)).toEqual(["doubler thread exited (code 3)", "doubler thread exited (code 3)"]);
    expect(await thread.call(5)).toBe("10/1");
  });
});
