// FarmStore on NATS JetStream: KV buckets farm-nodes, farm-drvs (keyed by
// the drv path's 32-char hash part) and farm-jobs (keyed by job id), and the
// FARM_EVENTS stream on farm.events.>. Puts are pipelined in batches; loads
// read each bucket's stream with an ordered consumer (last value per key), so
// 100k entries move in seconds. Drv and job writes are compare-and-set on the
// KV revision (NATS "expected last subject sequence").
import { DeliverPolicy, JetStreamApiError, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamClient, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { connect, nanos, type NatsConnection } from "@nats-io/transport-node";
import type { DrvRecord } from "../core/drv-state.js";
import type { FarmEvent } from "../core/effects.js";
import { StoreConflictError, TransientError } from "../core/errors.js";
import type { Snapshot } from "../core/snapshot.js";
import type { DrvNode, JobRecord } from "../core/types.js";
import { checkPrefix, drvKey, estimateKey, eventSubject, jobKey, lastPerKey, SerialQueue, STORE_KINDS, type FarmStore, type StoreKind } from "./farm-store.js";
import type { LearnedEstimate } from "../core/estimator.js";
import { skipSettledRequestErrors } from "./nats-request-patch.js";

/** Options of a NatsStore. */
export interface NatsStoreOptions {
  /** Prepended to bucket, stream and subject names (tests use a unique one). Default "". */
  prefix?: string;
  /** Puts in flight at once. Default 250: enough to pipeline, and starting them (encoding each) holds the event loop only tens of ms. */
  batchSize?: number;
  /** How long events are kept. Default 7 days. */
  eventsMaxAgeMs?: number;
}

const WRONG_LAST_SEQUENCE = 10071;
const KINDS = STORE_KINDS;

/** A FarmStore backed by JetStream KV and a JetStream stream. */
export class NatsStore implements FarmStore {
  private readonly seen: Record<StoreKind, Map<string, number>> = { nodes: new Map(), drvs: new Map(), jobs: new Map(), estimates: new Map() };
  /** One per kind: writes of a key never race each other, and kinds don't wait for each other. */
  private readonly queues: Record<StoreKind, SerialQueue> = { nodes: new SerialQueue(), drvs: new SerialQueue(), jobs: new SerialQueue(), estimates: new SerialQueue() };
  private readonly dec = new TextDecoder();

  private constructor(
    private readonly nc: NatsConnection,
    private readonly ownsConnection: boolean,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly kvs: Record<StoreKind, KV>,
    readonly bucketNames: Record<StoreKind, string>,
    readonly streamName: string,
    private readonly prefix: string,
    private readonly batchSize: number,
  ) {}

  /**
   * Connects to `servers` and opens the store; `close()` closes the connection.
   * The connection reconnects forever: a NATS restart only stalls writes.
   */
  static async connect(servers: string | string[], opts: NatsStoreOptions = {}): Promise<NatsStore> {
    // noAsyncTraces: otherwise every request builds two Error objects up front (a stack each) in case it fails;
    // at a few writes per derivation that was 4 % of a busy coordinator's CPU. Errors still say what failed.
    // And the one Error nats.js builds after a request's reply anyway (nats-request-patch.ts).
    skipSettledRequestErrors();
    const nc = await connect({ servers, maxReconnectAttempts: -1, reconnectTimeWait: 500, noAsyncTraces: true });
    try {
      return await NatsStore.open(nc, opts, true);
    } catch (err) {
      await nc.close();
      throw err;
    }
  }

  /** Opens the store on an existing connection, creating buckets and stream if missing. */
  static async open(nc: NatsConnection, opts: NatsStoreOptions = {}, ownsConnection = false): Promise<NatsStore> {
    const prefix = checkPrefix(opts.prefix ?? "");
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const kvm = new Kvm(js);
    const names = { nodes: `${prefix}farm-nodes`, drvs: `${prefix}farm-drvs`, jobs: `${prefix}farm-jobs`, estimates: `${prefix}farm-estimates` };
    const kvs = {
      nodes: await kvm.create(names.nodes, { history: 1 }),
      drvs: await kvm.create(names.drvs, { history: 1 }),
      jobs: await kvm.create(names.jobs, { history: 1 }),
      estimates: await kvm.create(names.estimates, { history: 1 }),
    };
    const streamName = `${prefix}FARM_EVENTS`;
    try {
      await jsm.streams.info(streamName);
    } catch {
      await jsm.streams.add({
        name: streamName,
        subjects: [`${prefix}farm.events.>`],
        max_age: nanos(opts.eventsMaxAgeMs ?? 7 * 24 * 3600 * 1000),
      });
    }
    return new NatsStore(nc, ownsConnection, js, jsm, kvs, names, streamName, prefix, opts.batchSize ?? 250);
  }

  /** Latest value of every key in the three buckets. */
  async load(): Promise<Snapshot> {
    const [nodes, drvs, jobs, estimates] = await Promise.all([
      this.readBucket<DrvNode>("nodes"),
      this.readBucket<DrvRecord>("drvs"),
      this.readBucket<JobRecord>("jobs"),
      this.readBucket<LearnedEstimate>("estimates"),
    ]);
    return { nodes, drvs, jobs, estimates };
  }

  /** Stores nodes unconditionally (content-addressed, immutable). */
  async putNodes(nodes: DrvNode[]): Promise<void> {
    const batch = lastPerKey(nodes, (n) => drvKey(n.drvPath));
    return this.queues.nodes.run(() => this.putAll("nodes", batch, false));
  }

  /** Compare-and-set writes of drv records. A conflict fails the call; other keys of the batch may be written. */
  async putDrvs(records: DrvRecord[]): Promise<void> {
    const batch = lastPerKey(records, (r) => drvKey(r.drvPath));
    return this.queues.drvs.run(() => this.putAll("drvs", batch, true));
  }

  /** Compare-and-set write of one job. */
  async putJob(job: JobRecord): Promise<void> {
    const batch = new Map([[jobKey(job.jobId), job]]);
    return this.queues.jobs.run(() => this.putAll("jobs", batch, true));
  }

  /** Stores estimates unconditionally (advisory data). */
  async putEstimates(estimates: LearnedEstimate[]): Promise<void> {
    const batch = lastPerKey(estimates, estimateKey);
    return this.queues.estimates.run(() => this.putAll("estimates", batch, false));
  }

  /** Publishes to <prefix>farm.events.<type> and waits for the stream's ack. */
  async publish(event: FarmEvent): Promise<void> {
    try {
      await this.js.publish(eventSubject(this.prefix, event), JSON.stringify(event));
    } catch (err) {
      throw new TransientError(`publishing ${event.type} failed`, { cause: err });
    }
  }

  /** Every event still in the stream, oldest first. */
  async readEvents(): Promise<FarmEvent[]> {
    const out: FarmEvent[] = [];
    await this.readStream(this.streamName, DeliverPolicy.All, (m) => out.push(m.json<FarmEvent>()));
    return out;
  }

  /** The revision this store last saw for a key. */
  revision(kind: StoreKind, key: string): number | undefined {
    return this.seen[kind].get(key);
  }

  /** Deletes the buckets and the stream (tests, teardown of a farm). */
  async destroy(): Promise<void> {
    for (const kind of KINDS) await this.kvs[kind].destroy();
    await this.jsm.streams.delete(this.streamName);
  }

  /** Closes the connection if this store opened it. */
  async close(): Promise<void> {
    await Promise.all(Object.values(this.queues).map((q) => q.run(async () => undefined)));
    if (this.ownsConnection && !this.nc.isClosed()) await this.nc.close();
  }

  private async putAll<T>(kind: StoreKind, batch: Map<string, T>, cas: boolean): Promise<void> {
    const entries = [...batch];
    let conflict: StoreConflictError | null = null;
    for (let i = 0; i < entries.length; i += this.batchSize) {
      const chunk = entries.slice(i, i + this.batchSize);
      const results = await Promise.allSettled(
        chunk.map(async ([key, value]) => {
          const expected = this.seen[kind].get(key) ?? 0;
          try {
            const opts = cas ? { previousSeq: expected } : {};
            this.seen[kind].set(key, await this.kvs[kind].put(key, JSON.stringify(value), opts));
          } catch (err) {
            if (err instanceof JetStreamApiError && err.code === WRONG_LAST_SEQUENCE) {
              // An earlier attempt whose reply was lost (NATS restarting) may have landed: that is ours.
              const landed = await this.kvs[kind].get(key).catch(() => null);
              if (landed && landed.operation === "PUT" && landed.string() === JSON.stringify(value)) {
                this.seen[kind].set(key, landed.revision);
                return;
              }
              throw new StoreConflictError(this.bucketNames[kind], key, expected, { cause: err });
            }
            throw new TransientError(`writing ${this.bucketNames[kind]}/${key} failed`, { cause: err });
          }
        }),
      );
      for (const r of results) {
        if (r.status === "rejected") {
          if (!(r.reason instanceof StoreConflictError)) throw r.reason;
          conflict ??= r.reason;
        }
      }
    }
    if (conflict !== null) throw conflict;
  }

  private async readBucket<T>(kind: StoreKind): Promise<T[]> {
    const values = new Map<string, T>();
    const subjectPrefix = `$KV.${this.bucketNames[kind]}.`;
    await this.readStream(`KV_${this.bucketNames[kind]}`, DeliverPolicy.LastPerSubject, (m) => {
      const key = m.subject.slice(subjectPrefix.length);
      const op = m.headers?.get("KV-Operation");
      if (op === "DEL" || op === "PURGE") {
        values.delete(key);
        this.seen[kind].delete(key);
      } else {
        values.set(key, JSON.parse(this.dec.decode(m.data)) as T);
        this.seen[kind].set(key, m.seq);
      }
    });
    return [...values.values()];
  }

  // Reads a stream (all, or last per subject) up to its current end with an ordered consumer.
  private async readStream(stream: string, deliver: DeliverPolicy, visit: (m: JsMsg) => void): Promise<void> {
    const info = await this.jsm.streams.info(stream);
    if (info.state.messages === 0) return;
    const consumer = await this.js.consumers.get(stream, { deliver_policy: deliver });
    const messages = await consumer.consume({ max_messages: 5000 });
    try {
      for await (const m of messages) {
        visit(m);
        if (m.info.pending === 0) break;
      }
    } finally {
      await messages.close();
    }
  }
}
