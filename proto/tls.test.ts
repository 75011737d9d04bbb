import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { makeTestCa, type TestCa } from "../test/hostile/support.js";
import { httpRequest } from "./nix/http.js";
import { grpcTarget, readServerTls, trustCaForCache, wantsTls } from "./tls.js";

let dir: string;
let ca: TestCa;
let server: https.Server;
let url: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "farm-tls-unit-"));
  ca = makeTestCa(dir);
  const tls = readServerTls(ca.certFile, ca.keyFile)!;
  server = https.createServer({ cert: tls.cert, key: tls.key }, (_req, res) => res.end("trusted\n"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
});

afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe("TLS plumbing", () => {
  it("speaks TLS for https:// addresses, or plain ones when a CA is given", () => {
    expect(wantsTls("https://farm:7420", "")).toBe(true);
    expect(wantsTls("farm:7420", "/etc/ca.pem")).toBe(true);
    expect(wantsTls("farm:7420", "")).toBe(false);
    expect(wantsTls("http://farm:7420", "/etc/ca.pem")).toBe(false);
    expect(grpcTarget("https://farm.example:7420/")).toBe("farm.example:7420");
    expect(readServerTls("", "")).toBeNull();
    expect(() => readServerTls(path.join(dir, "nope.pem"), ca.keyFile)).toThrow(/cannot read the TLS certificate/);
  });

  it("makes the cache client's https trust the farm's CA, which it did not before", async () => {
    await expect(httpRequest(url)).rejects.toThrow(/self-signed|certificate/);
    trustCaForCache(ca.caFile);
    expect(await (await httpRequest(url)).text()).toBe("trusted\n");
  });
});
