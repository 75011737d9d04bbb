// The memo's race rule, driven directly: the file system cannot be made to
// finish a read after a replace on cue, so disk-storage.test.ts covers only removals.
import { describe, expect, it } from "vitest";
import { NarInfoMemo } from "./narinfo-memo.js";

describe("NarInfoMemo", () => {
  it("does not keep bytes a read got from before a replace that finished first", () => {
    const memo = new NarInfoMemo(1 << 20);
    memo.load("r");
    const startedAt = memo.readStarted(); // a read of the old file begins
    memo.written("r", Buffer.from("new")); // a replace lands meanwhile
    memo.remember("r", Buffer.from("old"), startedAt); // the slow read comes back
    expect(memo.get("r")?.toString()).toBe("new");
  });

  it("does not keep bytes a read got from before a streamed replace, whose bytes it does not hold", () => {
    const memo = new NarInfoMemo(1 << 20);
    memo.load("r");
    const startedAt = memo.readStarted();
    memo.writtenUnseen("r");
    memo.remember("r", Buffer.from("old"), startedAt);
    expect(memo.get("r")).toBeUndefined(); // read from disk next time
    // A read that starts after the replace is kept.
    memo.remember("r", Buffer.from("new"), memo.readStarted());
    expect(memo.get("r")?.toString()).toBe("new");
  });
});
