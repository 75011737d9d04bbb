// The pool keeps each platform's fleet list between dispatch passes; whatever
// happens to the workers, the list it gives must be the one a fresh walk gives.
import { describe, expect, it } from "vitest";
import { SeededRandom } from "./clock.js";
import { LeaseIndex } from "./lease-index.js";
import { platformMatches } from "./placement.js";
import { mkWorker } from "./test-support.js";
import { WorkerPool } from "./worker-pool.js";
import { disconnect, drain, markLost, newWorkerRecord, placeholderWorker, rejoin, touch, type WorkerRecord } from "./worker-state.js";

const PLATFORMS: [string, string[]][] = [
  ["x86_64-linux", []],
  ["x86_64-linux", ["big-parallel"]],
  ["aarch64-linux", []],
];

function walk(pool: WorkerPool, system: string, features: string[]): WorkerRecord[] {
  return [...pool.values()].filter((w) => w.state === "active" && platformMatches(w.info, system, features));
}

describe("WorkerPool.fleet", () => {
  it("is what a walk of the workers gives, after every join, rejoin with other info, drain, disconnect, loss and heartbeat", () => {
    for (let seed = 1; seed <= 10; seed++) {
      const random = new SeededRandom(seed);
      const int = (n: number) => Math.floor(random.next() * n);
      const pool = new WorkerPool(new LeaseIndex());
      const infoOf = (id: string) =>
        mkWorker(id, { systems: int(3) === 0 ? ["aarch64-linux"] : ["x86_64-linux"], features: int(2) === 0 ? ["big-parallel"] : [], memoryBytes: (1 + int(16)) * 2 ** 30 });
      for (let step = 0; step < 400; step++) {
        const id = `w${int(12)}`;
        const w = pool.get(id);
        const now = step * 1000;
        const action = int(7);
        if (w === undefined) pool.add(action === 0 ? placeholderWorker(id, now, now + 10_000) : newWorkerRecord(infoOf(id), now, now + 10_000));
        else if (action === 0 || w.state === "lost" || w.state === "disconnected") rejoin(w, int(2) === 0 ? w.info : infoOf(id), now, now + 10_000);
        else if (action === 1) drain(w, now, now + 5000, now + 10_000);
        else if (action === 2) disconnect(w, now);
        else if (action === 3) markLost(w);
        else touch(w, now, now + 10_000, { freeMemoryBytes: 0, freeDiskBytes: 0, uptimeSeconds: step, running: [] });
        for (const [system, features] of PLATFORMS) expect(pool.fleet(system, features), `seed ${seed} step ${step}`).toEqual(walk(pool, system, features));
      }
    }
  });
});
