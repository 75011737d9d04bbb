import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { execa } from "execa";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestCache, type TestCache } from "../test/fixtures/cache-server.js";
import { FakeExecutor, loadFakeModel, singleFileNar } from "./fake-executor.js";
import { HashCounter } from "../proto/nix/mod.js";

const S = "/tmp/nix/store";
let cache: TestCache;
let dir: string;

beforeAll(async () => {
  cache = await startTestCache(S);
  dir = mkdtempSync(path.join(os.tmpdir(), "fake-exec-"));
});
afterAll(async () => {
  await cache?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("singleFileNar", () => {
  it("is byte-identical to nix-store --dump of the same file", async () => {
    for (const text of ["", "x", "hello, world\n", "12345678"]) {
      const file = path.join(dir, "f");
      writeFileSync(file, text);
      // Nix's own dirs in the test's temp dir: run as root with the defaults, even --dump sets up /nix/var.
      const env = { NIX_STORE_DIR: path.join(dir, "store"), NIX_STATE_DIR: path.join(dir, "state"), NIX_LOG_DIR: path.join(dir, "log") };
      const r = await execa("nix-store", ["--dump", file], { encoding: "buffer", env });
      expect(singleFileNar(text).equals(Buffer.from(r.stdout))).toBe(true);
    }
  });
});

describe("FakeExecutor", () => {
  const lease = { drvPath: `${S}/0123456789abcdfghijklmnpqrsvwxyz-fake.drv`, epoch: 1 };
  const spec = { lease, name: "fake", outputs: { out: `${S}/zyxwvsrqpnmlkjihgfdcba9876543210-fake`, dev: `${S}/zyxwvsrqpnmlkjihgfdcba987654321a-fake-dev` }, inputPaths: [], cores: 1, memoryLimitBytes: 0, timeoutMs: 0 };

  it("sends each output's NAR in its report, the bytes of the hash it reports", async () => {
    const ex = new FakeExecutor({ model: { durations: {}, defaultMs: 1 }, makeCache: () => cache.client(), logger: pino({ level: "silent" }) });
    const r = await ex.run(spec, { cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, signal: new AbortController().signal, onLog: () => {} });
    expect(r.outcome).toBe("succeeded");
    for (const o of r.outputs) {
      const counter = new HashCounter();
      counter.update(o.inline!.nar);
      expect(counter.result()).toEqual({ hash: o.narHash, size: o.narSize });
      expect(o.inline!.references).toEqual([]);
      expect(await cache.client().narInfo(o.path)).toBeNull(); // nothing uploaded
    }
  });

  it("sleeps for the modelled time and, not inline, uploads every output to the cache", async () => {
    const modelFile = path.join(dir, "model.json");
    writeFileSync(modelFile, JSON.stringify({ fake: 150 }));
    const ex = new FakeExecutor({ model: loadFakeModel(modelFile, 1), makeCache: () => cache.client(), logger: pino({ level: "silent" }), inline: false });
    const lines: string[] = [];
    const r = await ex.run(spec, { cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, signal: new AbortController().signal, onLog: (l) => lines.push(...l) });
    expect(r.outcome).toBe("succeeded");
    expect(r.durationMs).toBeGreaterThanOrEqual(140);
    expect(lines[0]).toContain("150 ms");
    for (const o of r.outputs) expect((await cache.client().narInfo(o.path))?.narHash).toBe(o.narHash);
    expect(r.outputs.map((o) => o.name).sort()).toEqual(["dev", "out"]);
  });

  it("reports aborted when aborted, and upload-failed when the cache refuses", async () => {
    const model = { durations: {}, defaultMs: 10_000 };
    const ac = new AbortController();
    const ex = new FakeExecutor({ model, makeCache: () => cache.client(), logger: pino({ level: "silent" }) });
    setTimeout(() => ac.abort("stop"), 50);
    expect((await ex.run(spec, { cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, signal: ac.signal, onLog: () => {} })).outcome).toBe("aborted");
    const noToken = new FakeExecutor({ model: { durations: {}, defaultMs: 0 }, makeCache: () => cache.client({ token: "nope" }), logger: pino({ level: "silent" }), inline: false });
    const r = await noToken.run(spec, { cacheUrl: cache.url, cachePublicKey: cache.keys.publicKey, signal: new AbortController().signal, onLog: () => {} });
    expect(r.outcome).toBe("upload-failed");
    expect(r.error).toMatch(/403/);
  });

  it("rejects a model that is not name -> ms", () => {
    const bad = path.join(dir, "bad.json");
    writeFileSync(bad, JSON.stringify({ x: "slow" }));
    expect(() => loadFakeModel(bad, 1)).toThrow(/name -> milliseconds/);
  });
});
