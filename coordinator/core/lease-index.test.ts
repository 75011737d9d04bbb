import { describe, expect, it } from "vitest";
import { addBackupCopy, dropHolder, lease, newDrvRecord, requeue } from "./drv-state.js";
import { LeaseIndex } from "./lease-index.js";

function readyRec(p: string) {
  const rec = newDrvRecord(p, 0);
  rec.state = "ready";
  return rec;
}

describe("LeaseIndex", () => {
  it("derives each worker's builds and reservations from the records' holders", () => {
    const idx = new LeaseIndex();
    const a = readyRec("/a");
    const b = readyRec("/b");
    lease(a, { workerId: "w1", cores: 2, memoryBytes: 100, diskBytes: 10, now: 0 });
    idx.sync(a);
    lease(b, { workerId: "w1", cores: 1, memoryBytes: 50, now: 0 });
    idx.sync(b);
    expect(idx.hasBackupCopies()).toBe(false);
    addBackupCopy(a, { workerId: "w2", cores: 3, reservedMemoryBytes: 300, reservedDiskBytes: 30, startedAtMs: 5 });
    idx.sync(a);
    expect([...idx.of("w1").keys()]).toEqual(["/a", "/b"]);
    expect(idx.load("w1")).toEqual({ running: 2, reservedCores: 3, reservedMemoryBytes: 150, reservedDiskBytes: 10 });
    expect(idx.load("w2")).toEqual({ running: 1, reservedCores: 3, reservedMemoryBytes: 300, reservedDiskBytes: 30 });
    expect(idx.hasBackupCopies()).toBe(true);

    // The primary's worker is lost: the backup copy carries the lease on, in its place.
    dropHolder(a, "w1");
    idx.sync(a);
    expect([...idx.of("w1").keys()]).toEqual(["/b"]);
    expect(idx.load("w2").reservedMemoryBytes).toBe(300);
    expect(idx.hasBackupCopies()).toBe(false); // one holder left: the copy is now the primary

    requeue(b, "test");
    idx.sync(b);
    expect(idx.load("w1")).toEqual({ running: 0, reservedCores: 0, reservedMemoryBytes: 0, reservedDiskBytes: 0 });
    expect(idx.of("w1").size).toBe(0);
  });
});
