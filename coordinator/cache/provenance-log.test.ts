// The provenance log on a real directory: records survive a reopen, the latest
// line of a name wins, a torn last line is dropped, and one-file-per-record
// provenance of older versions is taken in.
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseProvenanceLog, ProvenanceLog } from "./provenance-log.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "provenance-log-"));
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe("ProvenanceLog", () => {
  it("records, replaces and removes records, and a reopened log reads the same", async () => {
    const log = await ProvenanceLog.open(dir);
    // Written together: one group, each at its own place in the file.
    await Promise.all([log.put("a", '{"by":"w1"}'), log.put("b", '{"by":"w2","note":"ünïcode"}'), log.put("c", "{}")]);
    await log.put("a", '{"by":"w3"}');
    await log.remove("c");
    await log.remove("never-there");
    expect([await log.get("a"), await log.get("b"), await log.get("c")]).toEqual(['{"by":"w3"}', '{"by":"w2","note":"ünïcode"}', undefined]);
    expect(log.names().sort()).toEqual(["a", "b"]);

    const again = await ProvenanceLog.open(dir);
    expect([await again.get("a"), await again.get("b"), again.has("c")]).toEqual(['{"by":"w3"}', '{"by":"w2","note":"ünïcode"}', false]);
    expect(parseProvenanceLog(await readFile(path.join(dir, "log"), "utf8"))).toEqual(new Map([["a", '{"by":"w3"}'], ["b", '{"by":"w2","note":"ünïcode"}']]));
  });

  it("drops a torn last line, then appends after the last whole one", async () => {
    const log = await ProvenanceLog.open(dir);
    await log.put("a", "1");
    await appendFile(path.join(dir, "log"), '{"n":"b","d":"half'); // a crash mid-append
    const reopened = await ProvenanceLog.open(dir);
    expect(reopened.names()).toEqual(["a"]);
    await reopened.put("c", "3");
    expect(parseProvenanceLog(await readFile(path.join(dir, "log"), "utf8"))).toEqual(new Map([["a", "1"], ["c", "3"]]));
    expect(await reopened.get("c")).toBe("3");
  });

  it("takes in the one-file-per-record layout of older versions, keeping a newer logged record", async () => {
    await writeFile(path.join(dir, "old1"), '{"by":"old"}');
    await writeFile(path.join(dir, "a"), '{"by":"older file"}');
    const first = await ProvenanceLog.open(dir);
    await first.put("a", '{"by":"logged"}'); // as if the file of `a` were left behind after it was logged
    await writeFile(path.join(dir, "a"), '{"by":"older file"}');
    const log = await ProvenanceLog.open(dir);
    expect([await log.get("old1"), await log.get("a")]).toEqual(['{"by":"old"}', '{"by":"logged"}']);
    expect(await readdir(dir)).toEqual(["log"]);
  });
});
