// Test helper: a real gRPC server speaking the coordinator's side of
// WorkerService.Connect, scripted by the test (it sends what the test says and
// records what the worker sends).
import { Server, ServerCredentials, status, type ServerDuplexStream } from "@grpc/grpc-js";
import { WorkerServiceService, type CoordinatorMessage, type WorkerMessage } from "../../proto/gen/farm.js";

type Case = NonNullable<WorkerMessage["msg"]>["$case"];
type ValueOf<C extends Case> = Extract<NonNullable<WorkerMessage["msg"]>, { $case: C }>["value"];

/** One Connect stream as the coordinator sees it. */
export class FakeStream {
  readonly received: WorkerMessage[] = [];
  private waiters: Array<() => void> = [];
  ended = false;

  constructor(readonly call: ServerDuplexStream<WorkerMessage, CoordinatorMessage>) {
    call.on("data", (m: WorkerMessage) => {
      this.received.push(m);
      this.wake();
    });
    const done = () => {
      this.ended = true;
      this.wake();
    };
    call.on("end", done);
    call.on("cancelled", done);
    call.on("error", done);
  }

  /** Waits for the next message of kind `kind` (earlier ones of other kinds stay queued). */
  async next<C extends Case>(kind: C, timeoutMs = 10_000): Promise<ValueOf<C>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.received.findIndex((m) => m.msg?.$case === kind);
      if (i >= 0) return this.received.splice(i, 1)[0].msg!.value as ValueOf<C>;
      if (this.ended) throw new Error(`stream ended before a '${kind}' message`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no '${kind}' message within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Messages of kind `kind` received so far (without consuming them). */
  all<C extends Case>(kind: C): ValueOf<C>[] {
    return this.received.filter((m) => m.msg?.$case === kind).map((m) => m.msg!.value as ValueOf<C>);
  }

  /** Sends a message to the worker. */
  send(msg: CoordinatorMessage["msg"]): void {
    this.call.write({ msg });
  }

  /** Ends the stream with an error status. */
  fail(code: status, details: string): void {
    this.call.emit("error", { code, details });
  }

  /** Ends the stream normally. */
  close(): void {
    this.call.end();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }
}

/** A gRPC server on 127.0.0.1 that accepts Connect streams carrying `token`. */
export class FakeCoordinator {
  readonly streams: FakeStream[] = [];
  private readonly server = new Server();
  private waiters: Array<() => void> = [];
  port = 0;

  constructor(readonly token: string) {
    this.server.addService(WorkerServiceService, {
      connect: (call: ServerDuplexStream<WorkerMessage, CoordinatorMessage>) => {
        if (call.metadata.get("authorization")[0] !== `Bearer ${this.token}`) {
          call.emit("error", { code: status.UNAUTHENTICATED, details: "unknown or revoked token" });
          return;
        }
        this.streams.push(new FakeStream(call));
        const w = this.waiters;
        this.waiters = [];
        w.forEach((f) => f());
      },
    });
  }

  /** Starts listening on a free port. */
  async start(): Promise<this> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    return this;
  }

  /** Address for a worker's coordinatorUrl. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Waits for the n-th (0-based) accepted stream. */
  async stream(n: number, timeoutMs = 10_000): Promise<FakeStream> {
    const deadline = Date.now() + timeoutMs;
    while (this.streams.length <= n) {
      if (Date.now() > deadline) throw new Error(`no stream #${n} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.streams[n];
  }

  /** Stops the server, cutting open streams. */
  stop(): void {
    this.server.forceShutdown();
  }
}
