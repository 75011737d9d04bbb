// Restarting the machine's own NATS server the way an operator (or a crash
// plus a supervisor) would: find it in /proc, SIGTERM it, wait, and start it
// again with the very same command line, cwd and environment, so JetStream
// finds its data dir again and everything stored survives.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { waitFor } from "../harness/ports.js";

/** A running nats-server as /proc describes it. */
export interface NatsProcess {
  pid: number;
  /** The binary it runs (argv[0] may be a bare name found on PATH). */
  exe: string;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
}

function readNul(file: string): string[] {
  return readFileSync(file, "utf8").split("\0").filter(Boolean);
}

/** The nats-server listening on `port` (by its -p/--port argument, 4222 when absent). */
export function findNatsServer(port = 4222): NatsProcess {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = readNul(`/proc/${name}/cmdline`);
      if (argv.length === 0 || path.basename(argv[0]) !== "nats-server") continue;
      const i = argv.findIndex((a) => a === "-p" || a === "--port" || a === "-port");
      const p = i >= 0 ? Number(argv[i + 1]) : 4222;
      if (p !== port) continue;
      const env = Object.fromEntries(readNul(`/proc/${name}/environ`).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
      return { pid: Number(name), exe: readlinkSync(`/proc/${name}/exe`), argv, cwd: readlinkSync(`/proc/${name}/cwd`), env };
    } catch {
      // the process went away while we looked
    }
  }
  throw new Error(`no nats-server process listening on port ${port} found in /proc`);
}

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

/** Memory cgroup (v1) the restarted server moves to, so it is not counted or killed with the test's processes. */
const NATS_CGROUP = "/sys/fs/cgroup/memory/tmpnix-nats";

/** Starts nats-server as `proc` was started (detached: it outlives the test, like the original). */
export function startNatsServer(proc: NatsProcess): number {
  const child = spawn(proc.exe, proc.argv.slice(1), { cwd: proc.cwd, env: proc.env, detached: true, stdio: "ignore" });
  child.unref();
  try {
    mkdirSync(NATS_CGROUP, { recursive: true });
    writeFileSync(path.join(NATS_CGROUP, "cgroup.procs"), String(child.pid));
  } catch {
    // no cgroup v1 memory controller here: it simply stays where it was started
  }
  return child.pid!;
}

/**
 * SIGTERMs the server, keeps it down for `downMs`, starts it again with the
 * same command line and waits until JetStream answers. Returns the new pid.
 * The server is started again even if waiting for the old one to exit fails.
 */
export async function restartNatsServer(url: string, downMs: number, port = 4222): Promise<{ oldPid: number; newPid: number; downForMs: number }> {
  const proc = findNatsServer(port);
  const t0 = Date.now();
  process.kill(proc.pid, "SIGTERM");
  let newPid = 0;
  try {
    await waitFor(`nats-server ${proc.pid} to exit`, () => !existsSync(`/proc/${proc.pid}/cmdline`) || readFileSync(`/proc/${proc.pid}/cmdline`).length === 0, 20_000, 50);
    await new Promise((r) => setTimeout(r, downMs));
  } finally {
    newPid = startNatsServer(proc);
  }
  await waitForJetStream(url);
  return { oldPid: proc.pid, newPid, downForMs: Date.now() - t0 };
}

/** Starts the server again if nothing answers (a failed test must not leave the machine without NATS). */
export async function ensureNatsUp(url: string, last: NatsProcess | undefined): Promise<void> {
  try {
    await waitForJetStream(url, 2000);
  } catch {
    if (last) startNatsServer(last);
    await waitForJetStream(url);
  }
}
