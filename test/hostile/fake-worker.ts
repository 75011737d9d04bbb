// A scriptable worker for hostile tests: the generated WorkerServiceClient on
// a real gRPC stream, sending exactly what a test says (stale leases, floods,
// garbage joins) and recording what the coordinator answers.
import { readFileSync } from "node:fs";
import { credentials, Metadata, type ClientDuplexStream, type ServiceError, status } from "@grpc/grpc-js";
import { PROTOCOL_VERSION } from "../../proto/convert/mod.js";
import { BuildStatus, WorkerServiceClient, type Assignment, type CoordinatorMessage, type Lease, type ResultAck, type WorkerJoin, type WorkerMessage } from "../../proto/gen/farm.js";

/** How a stream ended: the gRPC status the coordinator gave. */
export interface StreamEnd {
  code: status;
  details: string;
  atMs: number;
}

/** A join with sane defaults and a system no real derivation uses, so it gets no work unless asked. */
export function joinMessage(workerId: string, over: Partial<WorkerJoin> = {}): WorkerMessage {
  const join: WorkerJoin = {
    protocolVersion: PROTOCOL_VERSION,
    workerId,
    softwareVersion: "hostile-test",
    systems: ["hostile-none"],
    features: [],
    cores: 1,
    memoryBytes: 1024 ** 3,
    freeDiskBytes: 10 * 1024 ** 3,
    storeDir: "/tmp/nix/store",
    uptimeSeconds: 1,
    maxLifetimeSeconds: 0,
    maxBuilds: 1,
    running: [],
    nixVersion: "",
    nixSource: "",
    ...over,
  };
  return { msg: { $case: "join", value: join } };
}

/** One fake worker connection. */
export class FakeWorker {
  readonly received: CoordinatorMessage[] = [];
  readonly ended: Promise<StreamEnd>;
  private readonly client: WorkerServiceClient;
  private readonly call: ClientDuplexStream<WorkerMessage, CoordinatorMessage>;
  private readonly waiters = new Set<() => void>();
  private heartbeatTimer?: NodeJS.Timeout;
  private endedWith?: StreamEnd;

  constructor(address: string, token: string, opts: { caFile?: string; maxSendBytes?: number } = {}) {
    const creds = opts.caFile ? credentials.createSsl(readFileSync(opts.caFile)) : credentials.createInsecure();
    this.client = new WorkerServiceClient(address, creds, { "grpc.max_send_message_length": opts.maxSendBytes ?? -1 });
    const md = new Metadata();
    md.set("authorization", `Bearer ${token}`);
    this.call = this.client.connect(md);
    this.call.on("data", (m: CoordinatorMessage) => {
      this.received.push(m);
      this.wake();
    });
    this.ended = new Promise((resolve) => {
      const finish = (code: status, details: string) => {
        if (this.endedWith) return;
        this.endedWith = { code, details, atMs: Date.now() };
        clearInterval(this.heartbeatTimer);
        resolve(this.endedWith);
        this.wake();
      };
      this.call.on("error", (err: ServiceError) => finish(err.code, err.details));
      this.call.on("end", () => finish(status.OK, "stream ended"));
    });
  }

  /** Whether the stream has ended. */
  get closed(): boolean {
    return this.endedWith !== undefined;
  }

  /** Writes one message; returns false once the stream has ended. */
  send(m: WorkerMessage): boolean {
    if (this.closed) return false;
    this.call.write(m);
    return true;
  }

  /** Writes one message, waiting while the stream's buffer is full (a flood that respects flow control). */
  async write(m: WorkerMessage): Promise<void> {
    if (this.closed) throw new Error("stream ended");
    if (!this.call.write(m)) await Promise.race([new Promise((r) => this.call.once("drain", r)), this.ended]);
  }

  /** Joins and waits for the Welcome. */
  async join(workerId: string, over: Partial<WorkerJoin> = {}): Promise<void> {
    this.send(joinMessage(workerId, over));
    await this.next("welcome");
  }

  /** Sends a heartbeat now and then every `everyMs` (reporting `running`), like a live worker. */
  keepAlive(everyMs: number, running: () => Lease[] = () => []): void {
    const beat = () => this.send({ msg: { $case: "heartbeat", value: { freeMemoryBytes: 1024 ** 3, freeDiskBytes: 10 * 1024 ** 3, uptimeSeconds: 5, running: running(), usage: [] } } });
    beat();
    this.heartbeatTimer = setInterval(beat, everyMs);
  }

  /** Reports a result for `lease` (with the outputs it says it built; `nar`: sent inline rather than uploaded). */
  result(lease: Lease, outcome: BuildStatus, error = "", outputs: { name: string; path: string; narHash: string; narSize: number; nar?: Buffer; references?: string[] }[] = []): boolean {
    const wire = outputs.map((o) => ({ nar: Buffer.alloc(0), references: [], ...o }));
    return this.send({ msg: { $case: "result", value: { lease, status: outcome, outputs: wire, durationMs: 10, peakMemoryBytes: 1, cores: 1, error, memoryNotMeasured: false } } });
  }

  /** The first message of a kind matching `pred` received at index `since` or later (or still coming); throws at the timeout or stream end. */
  async next<K extends NonNullable<CoordinatorMessage["msg"]>["$case"]>(
    kind: K,
    pred: (v: Extract<NonNullable<CoordinatorMessage["msg"]>, { $case: K }>["value"]) => boolean = () => true,
    timeoutMs = 30_000,
    since = 0,
  ): Promise<Extract<NonNullable<CoordinatorMessage["msg"]>, { $case: K }>["value"]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      for (const m of this.received.slice(since)) {
        if (m.msg?.$case === kind && pred(m.msg.value as never)) return m.msg.value as never;
      }
      if (this.closed) throw new Error(`stream ended (${status[this.endedWith!.code]}: ${this.endedWith!.details}) before a ${kind} came`);
      if (Date.now() > until) throw new Error(`no ${kind} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, Math.max(0, until - Date.now()) + 1);
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.waiters.add(done);
      });
    }
  }

  /** The next assignment. */
  assignment(timeoutMs = 60_000): Promise<Assignment> {
    return this.next("assign", () => true, timeoutMs);
  }

  /** The ResultAck for exactly this lease, received at index `since` or later. */
  ack(lease: Lease, since = 0, timeoutMs = 30_000): Promise<ResultAck> {
    return this.next("resultAck", (a) => a.lease?.drvPath === lease.drvPath && a.lease?.epoch === lease.epoch, timeoutMs, since);
  }

  /** Ends the stream from our side and closes the channel. */
  close(): void {
    clearInterval(this.heartbeatTimer);
    if (!this.closed) this.call.cancel();
    this.call.on("error", () => {});
    this.client.close();
  }

  private wake(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }
}

export { BuildStatus };
