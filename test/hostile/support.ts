// Helpers for the hostile and TLS tests: a throwaway CA made with openssl, an
// atomically rewritten tokens file, a FarmService client, and readings of a
// process's memory.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import http2 from "node:http2";
import path from "node:path";
import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { FarmServiceClient } from "../../proto/gen/farm.js";
import { parseProvenanceLog } from "../../coordinator/cache/provenance-log.js";

/** Files of a test CA and a server certificate it signed for 127.0.0.1 / localhost. */
export interface TestCa {
  caFile: string;
  certFile: string;
  keyFile: string;
}

/** Makes a fresh CA and a server certificate in `dir` with the openssl CLI. */
export function makeTestCa(dir: string): TestCa {
  const f = (name: string) => path.join(dir, name);
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2", "-subj", "/CN=tmpnix farm test CA");
  openssl("req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=127.0.0.1");
  writeFileSync(f("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  openssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("server.pem"), "-days", "2", "-extfile", f("server.ext"));
  return { caFile: f("ca.pem"), certFile: f("server.pem"), keyFile: f("server.key") };
}

/** A random token of the coordinator's accepted shape. */
export const newToken = (what: string) => `${what}-${randomBytes(12).toString("hex")}`;

/** Writes 'role name token' lines the documented way: a new file renamed over the old one. */
export function writeTokens(file: string, lines: [role: string, name: string, token: string][]): void {
  writeFileSync(`${file}.new`, lines.map((l) => l.join(" ")).join("\n") + "\n");
  renameSync(`${file}.new`, file);
}

/** A FarmService client (plaintext, or TLS trusting `caFile`) and a promise-style unary call. */
export function farmClient(address: string, token: string, caFile?: string) {
  const creds = caFile ? credentials.createSsl(readFileSync(caFile)) : credentials.createInsecure();
  const client = new FarmServiceClient(address, creds, { "grpc.max_send_message_length": -1, "grpc.max_receive_message_length": -1 });
  const md = () => {
    const m = new Metadata();
    m.set("authorization", `Bearer ${token}`);
    return m;
  };
  type Cb<Res> = (err: ServiceError | null, res: Res) => void;
  function call<Req, Res>(method: (req: Req, md: Metadata, opts: { deadline: Date }, cb: Cb<Res>) => unknown, req: Req, timeoutMs = 120_000): Promise<Res> {
    return new Promise((resolve, reject) => {
      method.call(client, req, md(), { deadline: new Date(Date.now() + timeoutMs) }, (err: ServiceError | null, res: Res) => (err ? reject(err) : resolve(res)));
    });
  }
  return { client, call, close: () => client.close() };
}

/** Resident memory of a process in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Every pid whose environment has NAME=value (e.g. the processes of one worker). */
export function pidsWithEnv(name: string, value: string): number[] {
  const out: number[] = [];
  for (const pid of execFileSync("ps", ["-e", "-o", "pid="], { encoding: "utf8" }).split("\n").map(Number).filter(Boolean)) {
    try {
      const env = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      if (env.includes(`${name}=${value}`)) out.push(pid);
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** What a raw HTTP/2 request to a gRPC method got back. */
export interface RawGrpcReply {
  httpStatus: number;
  grpcStatus: number;
  grpcMessage: string;
}

/** POSTs `body` as-is (no gRPC framing unless the caller adds it) to a gRPC method path. */
export function rawGrpc(port: number, method: string, token: string, body: Buffer, timeoutMs = 10_000): Promise<RawGrpcReply> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", reject);
    const req = session.request({ ":method": "POST", ":path": method, "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${token}` });
    const timer = setTimeout(() => {
      req.close();
      session.close();
      reject(new Error(`no reply to raw ${method} within ${timeoutMs} ms`));
    }, timeoutMs);
    const reply: RawGrpcReply = { httpStatus: 0, grpcStatus: -1, grpcMessage: "" };
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h[":status"]) reply.httpStatus = Number(h[":status"]);
      if (h["grpc-status"] !== undefined) reply.grpcStatus = Number(h["grpc-status"]);
      if (h["grpc-message"] !== undefined) reply.grpcMessage = decodeURIComponent(String(h["grpc-message"]));
    };
    req.on("response", take);
    req.on("trailers", take);
    req.on("data", () => {});
    req.on("error", () => {});
    req.on("close", () => {
      clearTimeout(timer);
      session.close();
      resolve(reply);
    });
    req.end(body);
  });
}

/** One gRPC length-prefixed frame around `payload`. */
export function grpcFrame(payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/**
 * A healthy job that builds beside a hostile test and must complete: the demo
 * DAG on a real worker of its own (an isolated "container"), submitted with
 * `token` (a CLI or admin token). `features` keeps the worker off derivations
 * that need what it lacks.
 */
export function startHealthyJob(farm: import("../harness/cluster.js").FarmCluster, token: string, worker: { name: string; token: string } = { name: "healthy", token: farm.token }) {
  farm.startWorker({ name: worker.name, env: { FARM_TOKEN: worker.token } });
  const demo = path.join(REPO_ROOT, "test/fixtures/demo/default.nix");
  // A submitter of its own (its own /tmp/nix): two evaluations at once in one Nix store can meet a busy SQLite database.
  const nixDir = path.join(farm.root, "healthy-submitter", "nix");
  const job = farm.cli(["submit", `${demo}#demo`, "--follow", "--json"], { env: { FARM_TOKEN: token }, nixDir });
  return {
    /** Resolves once the job ended; throws unless it succeeded. */
    async succeeded(): Promise<string> {
      const r = await job;
      if (r.code !== 0) throw new Error(`the healthy job failed: ${r.stderr}\n${r.stdout}`);
      const status = JSON.parse(r.stdout) as { state: string; jobId: string };
      if (status.state !== "succeeded") throw new Error(`the healthy job ended ${status.state}`);
      return status.jobId;
    },
  };
}

const REPO_ROOT = path.resolve(import.meta.dirname, "../..");

/** A farm for a hostile test: a temp dir of its own holding a tokens file of `lines`; `stop` removes both. */
export async function startTokenFarm(name: string, lines: [role: string, name: string, token: string][], opts: { coordinatorEnv?: Record<string, string> } = {}) {
  const { FarmCluster } = await import("../harness/cluster.js");
  const dir = mkdtempSync(path.join(os.tmpdir(), `farm-${name}-`));
  const tokensFile = path.join(dir, "tokens");
  writeTokens(tokensFile, lines);
  const farm = await FarmCluster.start({ workers: [], coordinatorEnv: { FARM_TOKENS_FILE: tokensFile, ...opts.coordinatorEnv } });
  return {
    farm,
    dir,
    async stop(): Promise<void> {
      await farm.stop(Boolean(process.env.KEEP_TEST_FILES));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The farm cache's provenance records by hash part, read from its log (`cache/provenance/log`). */
export function provenanceRecords(farm: { dataDir: string }): Map<string, Record<string, unknown>> {
  const file = path.join(farm.dataDir, "cache", "provenance", "log");
  const text = existsSync(file) ? readFileSync(file, "utf8") : "";
  return new Map([...parseProvenanceLog(text)].map(([hash, record]) => [hash, JSON.parse(record) as Record<string, unknown>]));
}
