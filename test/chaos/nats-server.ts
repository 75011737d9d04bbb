// A NATS server of the test's own: nats-server with JetStream on a free
// loopback port and a store dir under the test's temp dir, which the chaos run
// stops and starts again the way an operator (or a crash plus a supervisor)
// would: SIGTERM, a pause, the very same command line, so JetStream finds its
// data dir again and everything stored survives. The machine's own NATS is
// never touched.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { freePort, waitFor } from "../harness/ports.js";

/** Resolves once JetStream at `url` answers an account-info request. */
export async function waitForJetStream(url: string, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    "JetStream",
    async () => {
      try {
        const nc = await connect({ servers: url, reconnect: false, timeout: 1000 });
        try {
          await (await jetstreamManager(nc)).getAccountInfo();
          return true;
        } finally {
          await nc.close();
        }
      } catch {
        return false;
      }
    },
    timeoutMs,
    200,
  );
}

/** A nats-server the test started and owns. */
export class PrivateNats {
  private child?: ChildProcess;

  private constructor(readonly port: number, readonly storeDir: string, private readonly logFile: string) {}

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.child?.pid ?? 0;
  }

  /** Starts nats-server -js on a free port with its store under `dir`, and waits for JetStream. */
  static async start(dir: string): Promise<PrivateNats> {
    mkdirSync(path.join(dir, "jetstream"), { recursive: true });
    const nats = new PrivateNats(await freePort(), path.join(dir, "jetstream"), path.join(dir, "nats-server.log"));
    await nats.launch();
    return nats;
  }

  private async launch(): Promise<void> {
    const log = openSync(this.logFile, "a");
    this.child = spawn("nats-server", ["-js", "-a", "127.0.0.1", "-p", String(this.port), "-sd", this.storeDir], { stdio: ["ignore", log, log] });
    await waitForJetStream(this.url);
  }

  /** SIGTERMs the server and waits for it to exit. */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 20_000))]);
    if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  }

  /**
   * SIGTERMs the server, keeps it down for `downMs`, starts it again with the
   * same command line and waits until JetStream answers.
   */
  async restart(downMs: number): Promise<{ oldPid: number; newPid: number; downForMs: number }> {
    const oldPid = this.pid;
    const t0 = Date.now();
    try {
      await this.stop();
      await new Promise((r) => setTimeout(r, downMs));
    } finally {
      await this.launch();
    }
    return { oldPid, newPid: this.pid, downForMs: Date.now() - t0 };
  }
}
