import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { StagedJournal } from "./staged-journal.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "farm-staged-journal-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const lines = async () => (await readFile(join(dir, "journal"), "utf8")).split("\n").filter(Boolean).length;

describe("StagedJournal", () => {
  it("writes appends that come together in one go, and rewrites itself once it holds many more lines than records", async () => {
    const j = await StagedJournal.open(dir);
    await Promise.all(Array.from({ length: 20 }, (_, i) => j.put(`r${i}`, `record ${i}`)));
    expect(await lines()).toBe(20);
    // Uploads come and go: 6,000 staged and accepted leave one record behind, and the journal is rewritten along the way.
    for (let round = 0; round < 6; round++) {
      await Promise.all(Array.from({ length: 1000 }, (_, i) => j.put(`o${round}-${i}`, "x")));
      await Promise.all(Array.from({ length: 1000 }, (_, i) => j.remove(`o${round}-${i}`)));
    }
    await j.flushed();
    expect(j.names()).toHaveLength(20);
    expect(await lines()).toBeLessThan(2000); // 12,020 lines were appended; a rewrite kept the 20 live ones
    const reopened = await StagedJournal.open(dir);
    expect(reopened.names().sort()).toEqual(j.names().sort());
    expect(reopened.get("r7")).toBe("record 7");
  });
});
