// Runs against the real NATS server at 127.0.0.1:4222. Every test gets its
// own bucket/stream prefix and deletes them afterwards.
import { Kvm } from "@nats-io/kv";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { drvPathOf, mkNode } from "../core/test-support.js";
import { newDrvRecord } from "../core/drv-state.js";
import { StoreConflictError } from "../core/errors.js";
import { drvKey } from "./farm-store.js";
import { NatsStore } from "./nats-store.js";
import { storeConformance } from "./store-conformance.js";

const SERVER = "127.0.0.1:4222";
const runId = `t${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
let counter = 0;
const nextPrefix = () => `${runId}x${counter++}-`;

let nc: NatsConnection;
beforeAll(async () => {
  nc = await connect({ servers: SERVER });
});
afterAll(async () => {
  await nc?.close();
});

storeConformance("nats", {
  async create() {
    const prefix = nextPrefix();
    return {
      open: () => NatsStore.open(nc, { prefix }),
      destroy: async () => (await NatsStore.open(nc, { prefix })).destroy(),
    };
  },
});

describe("NatsStore specifics", () => {
  const toDestroy: NatsStore[] = [];
  afterEach(async () => {
    for (const s of toDestroy.splice(0)) await s.destroy();
  });

  it("creates prefixed buckets and stream, keys drvs by hash part and publishes on farm.events.<type>", async () => {
    const prefix = nextPrefix();
    const store = await NatsStore.open(nc, { prefix });
    toDestroy.push(store);
    expect(store.bucketNames).toEqual({ nodes: `${prefix}farm-nodes`, drvs: `${prefix}farm-drvs`, jobs: `${prefix}farm-jobs`, estimates: `${prefix}farm-estimates` });
    expect(store.streamName).toBe(`${prefix}FARM_EVENTS`);
    const node = mkNode("hello");
    await store.putNodes([node]);
    const kv = await new Kvm(jetstream(nc)).open(`${prefix}farm-nodes`);
    const entry = await kv.get(drvKey(drvPathOf("hello")));
    expect(drvKey(drvPathOf("hello"))).toHaveLength(32);
    expect(entry?.json()).toEqual(node);
    expect(store.revision("nodes", drvKey(drvPathOf("hello")))).toBe(entry?.revision);

    await store.publish({ type: "job.finished", atMs: 1, jobId: "j", state: "succeeded" });
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(`${prefix}FARM_EVENTS`);
    expect(info.config.subjects).toEqual([`${prefix}farm.events.>`]);
    const msg = await jsm.streams.getMessage(`${prefix}FARM_EVENTS`, { seq: 1 });
    expect(msg?.subject).toBe(`${prefix}farm.events.job.finished`);

    // Opening again binds to what exists instead of failing.
    const again = await NatsStore.open(nc, { prefix });
    expect((await again.load()).nodes).toEqual([node]);
  });

  it("destroy removes every bucket and the stream", async () => {
    const prefix = nextPrefix();
    const store = await NatsStore.open(nc, { prefix });
    await store.destroy();
    const jsm = await jetstreamManager(nc);
    const names: string[] = [];
    for await (const n of jsm.streams.names()) names.push(n);
    expect(names.filter((n) => n.startsWith(prefix) || n.startsWith(`KV_${prefix}`))).toEqual([]);
  });

  it("takes a write that landed although its reply was lost (NATS restarting) as its own, but nothing else", async () => {
    const prefix = nextPrefix();
    const store = await NatsStore.open(nc, { prefix });
    toDestroy.push(store);
    const rec = newDrvRecord(drvPathOf("a"), 1);
    await store.putDrvs([rec]);
    // The next write reaches the server, but the store never hears back.
    const landed = { ...rec, state: "ready" as const };
    const kv = await new Kvm(jetstream(nc)).open(`${prefix}farm-drvs`);
    const rev = await kv.put(drvKey(rec.drvPath), JSON.stringify(landed));
    await store.putDrvs([landed]); // the retry
    expect(store.revision("drvs", drvKey(rec.drvPath))).toBe(rev);
    await store.putDrvs([{ ...landed, state: "building" }]); // and it carries on from there
    // A different value written behind its back is still a conflict.
    await kv.put(drvKey(rec.drvPath), JSON.stringify({ ...landed, epoch: 99 }));
    await expect(store.putDrvs([{ ...landed, state: "done" }])).rejects.toBeInstanceOf(StoreConflictError);
  });

  it("connect() owns its connection and rejects a bad prefix", async () => {
    await expect(NatsStore.open(nc, { prefix: "bad.prefix" })).rejects.toThrow(/prefix/);
    const store = await NatsStore.connect(SERVER, { prefix: nextPrefix() });
    await store.destroy();
    await store.close();
  });
});
