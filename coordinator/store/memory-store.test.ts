import { describe, expect, it } from "vitest";
import { drvPathOf, mkNode } from "../core/test-support.js";
import { MemoryBackend, MemoryStore } from "./memory-store.js";
import { storeConformance } from "./store-conformance.js";

storeConformance("memory", {
  async create() {
    const backend = new MemoryBackend();
    return { open: async () => new MemoryStore(backend), destroy: async () => undefined };
  },
});

describe("MemoryStore", () => {
  it("hands out copies, not its own objects", async () => {
    const s = new MemoryStore();
    const node = mkNode("a");
    await s.putNodes([node]);
    node.name = "changed";
    const { nodes } = await s.load();
    expect(nodes[0].name).toBe("a");
    expect(nodes[0].drvPath).toBe(drvPathOf("a"));
  });

  it("refuses calls after close", async () => {
    const s = new MemoryStore();
    await s.close();
    await expect(s.load()).rejects.toThrow(/closed/);
  });
});
