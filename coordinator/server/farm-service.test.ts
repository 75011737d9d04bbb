// SubmitStream over real gRPC: a DAG sent in pieces makes the same job as one
// Submit, under the same rules (token, size limit, idempotency key).
import { Server, ServerCredentials, credentials, status } from "@grpc/grpc-js";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeToWire } from "../../proto/convert/mod.js";
import { FarmServiceClient, FarmServiceService, SubmitRequest, type SubmitResponse } from "../../proto/gen/farm.js";
import { authMetadata, submitInPieces } from "../cli/rpc.js";
import { Scheduler } from "../core/scheduler.js";
import { mkNode } from "../core/test-support.js";
import type { DrvNode } from "../core/types.js";
import { MemoryStore } from "../store/memory-store.js";
import { TokenRegistry } from "./auth.js";
import { createFarmService } from "./farm-service.js";
import { testShell } from "./test-support.js";

const TOKEN = "admin-token-0123456789";
const MAX_NODES = 50;
let server: Server;
let client: FarmServiceClient;
let address = "";

/** A chain of `n` derivations, the last one the root. */
function chain(n: number, prefix: string): DrvNode[] {
  const nodes: DrvNode[] = [];
  for (let i = 0; i < n; i++) nodes.push(mkNode(`${prefix}${i}`, i === 0 ? [] : [`${prefix}${i - 1}`]));
  return nodes;
}

beforeAll(async () => {
  const store = new MemoryStore();
  await store.load();
  const { coord } = testShell(new Scheduler({}), store);
  server = new Server();
  server.addService(FarmServiceService, createFarmService({ api: coord, tokens: new TokenRegistry(TOKEN, ""), storeDir: "/tmp/nix/store", maxDagNodes: MAX_NODES, logger: pino({ level: "silent" }) }));
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  address = `127.0.0.1:${port}`;
  client = new FarmServiceClient(address, credentials.createInsecure());
});

afterAll(() => {
  client?.close();
  server?.forceShutdown();
});

const target = (token = TOKEN) => ({ coordinator: address, token, timeout: 10_000 });
const request = (nodes: DrvNode[], key: string) => ({ nodes: nodes.map(nodeToWire), roots: [nodes[nodes.length - 1].drvPath], description: `chain ${key}`, idempotencyKey: key, noPublish: true, source: "" });

describe("SubmitStream", () => {
  it("takes a DAG in pieces as one job with every node, and a retry with the same key finds that job", async () => {
    const nodes = chain(23, "p");
    const res = await submitInPieces(client, target(), request(nodes, "pieces-1"), 5);
    expect(res.existing).toBe(false);
    expect(res.status!.counts!.total).toBe(23);
    expect(res.status!.description).toBe("chain pieces-1");
    const again = await submitInPieces(client, target(), request(nodes, "pieces-1"), 7);
    expect(again).toMatchObject({ jobId: res.jobId, existing: true });
  });

  it("makes the same job as a one-message Submit", async () => {
    const nodes = chain(12, "q");
    const streamed = await submitInPieces(client, target(), request(nodes, "same-a"), 4);
    const unary = await new Promise<{ jobId: string }>((resolve, reject) =>
      client.submit(request(nodes, "same-b"), authMetadata(TOKEN), (err, r) => (err ? reject(err) : resolve(r))),
    );
    expect(unary.jobId).not.toBe(streamed.jobId);
    expect(streamed.status!.counts!.total).toBe(12);
  });

  it("takes a first message that carries only the request's fields, the nodes after it", async () => {
    const nodes = chain(4, "h");
    const req = request(nodes, "header-first");
    const res = await new Promise<SubmitResponse>((resolve, reject) => {
      const stream = client.submitStream(authMetadata(TOKEN), (err, r) => (err ? reject(err) : resolve(r)));
      stream.write({ ...req, nodes: [] });
      stream.write(SubmitRequest.fromPartial({ nodes: req.nodes }));
      stream.end();
    });
    expect(res.status!.counts!.total).toBe(4);
    expect(res.status!.description).toBe("chain header-first");
  });

  it("refuses a bad token, an empty stream and a DAG over the limit, with clear statuses", async () => {
    await expect(submitInPieces(client, target("forged-token-000000000"), request(chain(3, "f"), "forged"))).rejects.toMatchObject({ code: status.UNAUTHENTICATED });
    await expect(submitInPieces(client, target(), { ...request(chain(1, "e"), "empty"), nodes: [] })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, message: "submit carries no derivations" });
    await expect(submitInPieces(client, target(), request(chain(MAX_NODES + 1, "big"), "big"), 10)).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      message: expect.stringMatching(/accepts at most 50/),
    });
    // Still answering.
    expect((await submitInPieces(client, target(), request(chain(2, "ok"), "ok"))).existing).toBe(false);
  });
});
