// The group append's failure path, against a device whose every write fails
// (Linux's /dev/full: ENOSPC), so no disk needs filling.
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { AppendLog } from "./append-log.js";

describe.skipIf(!existsSync("/dev/full"))("AppendLog", () => {
  it("fails every caller of a group whose write fails, applies none of it, and takes the next group", async () => {
    const applied: number[] = [];
    const log = new AppendLog("/dev/full", 0);
    const group = [log.append("a\n", (at) => applied.push(at)), log.append("b\n", (at) => applied.push(at))];
    for (const outcome of await Promise.allSettled(group)) expect(outcome).toMatchObject({ status: "rejected", reason: { code: "ENOSPC" } });
    await expect(log.append("c\n")).rejects.toMatchObject({ code: "ENOSPC" });
    await log.flushed();
    expect([applied, log.size]).toEqual([[], 0]);
  });
});
