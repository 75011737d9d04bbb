import { describe, expect, it } from "vitest";
import { forEachAfterReferences } from "./closure.js";

const item = (storePath: string, ...references: string[]) => ({ storePath, references });

describe("forEachAfterReferences", () => {
  it("starts an item only after what it references has finished, at most `limit` at once", async () => {
    // Two chains of four (a0 <- a1 <- ..., b0 <- b1 <- ...), a fan-in at the end, self and outside references.
    const items = [
      item("top", "a3", "b3", "top", "/elsewhere"),
      ...[0, 1, 2, 3].flatMap((i) => [item(`a${i}`, ...(i ? [`a${i - 1}`] : [])), item(`b${i}`, ...(i ? [`b${i - 1}`] : []))]),
      ...Array.from({ length: 6 }, (_, i) => item(`loose${i}`)),
    ];
    const finished = new Set<string>();
    let running = 0;
    let most = 0;
    await forEachAfterReferences(items, 3, async (it) => {
      for (const r of it.references) if (r !== it.storePath && r !== "/elsewhere") expect(finished.has(r), `${it.storePath} before ${r}`).toBe(true);
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setTimeout(r, 5));
      running--;
      finished.add(it.storePath);
    });
    expect(finished.size).toBe(items.length);
    expect(most).toBe(3);
  });

  it("starts nothing after a failure and rejects with it once the running ones settled", async () => {
    const started: string[] = [];
    let settled = 0;
    const run = forEachAfterReferences([item("x"), item("y"), item("z", "x")], 2, async (it) => {
      started.push(it.storePath);
      await new Promise((r) => setTimeout(r, it.storePath === "y" ? 30 : 5));
      settled++;
      if (it.storePath === "x") throw new Error("x failed");
    });
    await expect(run).rejects.toThrow("x failed");
    expect(started).toEqual(["x", "y"]); // z waited on x, which failed
    expect(settled).toBe(2); // y had finished before the rejection
  });

  it("refuses a reference cycle before running anything", async () => {
    let ran = 0;
    await expect(forEachAfterReferences([item("p", "q"), item("q", "p")], 4, async () => void ran++)).rejects.toThrow(/reference cycle/);
    expect(ran).toBe(0);
  });
});
