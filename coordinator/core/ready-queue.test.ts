// The ready queues against a sort: whatever order derivations are pushed,
// re-queued and removed in, each platform's pops come best first.
import { describe, expect, it } from "vitest";
import { SeededRandom } from "./clock.js";
import { comparePriority, type PriorityKey } from "./priority.js";
import { ReadyQueues } from "./ready-queue.js";
import { mkNode } from "./test-support.js";

describe("ReadyQueues", () => {
  it("pops each platform's live entries in priority order, through re-queues and removals", () => {
    for (let seed = 1; seed <= 20; seed++) {
      const random = new SeededRandom(seed);
      const int = (n: number) => Math.floor(random.next() * n);
      const queues = new ReadyQueues();
      const expected = new Map<string, PriorityKey>();
      const nodes = Array.from({ length: 300 }, (_, i) => mkNode(`n${i}`, [], i % 3 === 0 ? { requiredSystemFeatures: ["big-parallel"] } : {}));
      let seq = 0;
      for (let step = 0; step < 2000; step++) {
        const node = nodes[int(nodes.length)];
        if (int(4) === 0) {
          queues.remove(node.drvPath);
          expected.delete(node.drvPath);
        } else {
          // Few ranks, so ties fall through to tiebreak and seq.
          const key = { rank: int(5), tiebreak: int(3), seq: seq++ };
          queues.push(node, key);
          expected.set(node.drvPath, key);
        }
      }
      expect(queues.size).toBe(expected.size);
      for (const q of queues.nonEmpty()) {
        const popped: PriorityKey[] = [];
        for (let e = queues.pop(q); e !== undefined; e = queues.pop(q)) {
          expect(e.key).toBe(expected.get(e.drvPath));
          popped.push(e.key);
        }
        expect(popped).toEqual([...popped].sort(comparePriority));
      }
      expect(queues.size).toBe(0);
    }
  });
});
