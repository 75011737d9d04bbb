// `farm submit <ref>`: evaluate on this machine, send the .drv closure to the
// cache, hand the DAG to the coordinator, and (with --follow) show progress
// until the job ends. Workers only ever see .drv files, never Nix expressions.
import { randomUUID } from "node:crypto";
import path from "node:path";
import pRetry from "p-retry";
import { status as grpcStatus, type ServiceError } from "@grpc/grpc-js";
import pino from "pino";
import type { CommandContext } from "./main.js";
import { connectFarm, call, authMetadata, rpcError, RpcError, submitInPieces } from "./rpc.js";
import { cutClosure, instantiate, loadJsonlDag } from "./dag/mod.js";
import { parseRef } from "./dag/ref.js";
import { nodeToWire } from "../../proto/convert/mod.js";
import { CacheClient } from "../../proto/nix/mod.js";
import { uploadClosure } from "./upload-closure.js";
import { nixEnvFor } from "./nix-env.js";
import { jobOutcome, progressLine } from "./format.js";
import { InvalidInputError } from "../core/errors.js";
import { JobStatus, type FarmInfo, type FarmServiceClient } from "../../proto/gen/farm.js";
import type { DrvNode } from "../core/types.js";

/** Runs the submit command; exit 0 on success (or submitted without --follow). */
export async function run(ctx: CommandContext): Promise<number> {
  const [ref] = ctx.positionals;
  const dagFile = ctx.flags.dag as string | undefined;
  if (dagFile ? ref !== undefined : !ref || ctx.positionals.length > 1) {
    throw new InvalidInputError("usage: farm submit <nixpkgs#attr | ./file.nix#attr> [--follow], or farm submit --dag FILE.jsonl[.xz] [--roots DRV,...]");
  }
  const logger = pino({ level: process.env.FARM_LOG_LEVEL ?? "warn" }, pino.destination(2));
  const client = connectFarm(ctx.config);
  try {
    const info = await call(client, ctx.config, client.getInfo, {});
    if (info.storeDir !== ctx.config.storeDir) throw new InvalidInputError(`the farm builds for ${info.storeDir}, but this CLI is set to ${ctx.config.storeDir}`);
    const dag = dagFile ? await loadDagFile(dagFile, ctx) : await evaluate(ref, ctx, info, logger);
    // One key per invocation: a retried Submit after a lost reply returns the same job.
    const request = {
      nodes: dag.nodes.map(nodeToWire),
      roots: dag.roots,
      description: String(ctx.flags.description ?? ref ?? dagFile),
      idempotencyKey: randomUUID(),
      // The coordinator publishes a succeeded ref under its attribute path, naming where it was evaluated from.
      noPublish: Boolean(ctx.flags["no-publish"]) || dagFile !== undefined,
      source: ref ? sourceOf(ref, ctx.config.nixpkgs) : "",
    };
    const res = await pRetry(() => submitInPieces(client, ctx.config, request), {
      retries: 5,
      minTimeout: 500,
      shouldRetry: (err) => err instanceof RpcError && err.code === grpcStatus.UNAVAILABLE,
    });
    if (!ctx.flags.follow) {
      if (ctx.json) ctx.out(JSON.stringify({ jobId: res.jobId, existing: res.existing, status: res.status && JobStatus.toJSON(res.status) }, null, 2));
      else ctx.out(res.jobId);
      return 0;
    }
    if (!ctx.json) ctx.out(res.jobId);
    const final = await follow(client, ctx, res.jobId);
    if (ctx.json) ctx.out(JSON.stringify(JobStatus.toJSON(final), null, 2));
    else ctx.out(jobOutcome(final));
    return final.state === "succeeded" ? 0 : 1;
  } finally {
    client.close();
  }
}

/** Where a ref was evaluated from: the nixpkgs location, or the file's absolute path. */
function sourceOf(ref: string, nixpkgs: string): string {
  const { kind, file } = parseRef(ref) as { kind: string; file?: string };
  return kind === "nixpkgs" ? nixpkgs : path.resolve(file!);
}

/** Evaluates a ref with stock Nix here and uploads its .drv closure to the cache. */
async function evaluate(ref: string, ctx: CommandContext, info: FarmInfo, logger: pino.Logger): Promise<{ nodes: DrvNode[]; roots: string[] }> {
  const status = (t: string) => !ctx.json && ctx.err(t);
  const nix = nixEnvFor(ctx.config.storeDir);
  status(`evaluating ${ref} ...`);
  const dag = await instantiate({ ref, nixpkgs: ctx.config.nixpkgs, storeDir: nix.storeDir, stateDir: nix.stateDir, logDir: nix.logDir, logger });
  const cache = new CacheClient({ baseUrl: ctx.config.cacheUrl || info.cacheUrl, trustedPublicKeys: [info.cachePublicKey], token: ctx.config.token, storeDir: nix.storeDir, logger });
  status(`${dag.nodes.length} derivations; sending ${dag.closurePaths.length} .drv files and sources to the cache ...`);
  const up = await uploadClosure({ client: cache, paths: dag.closurePaths, nix, logger });
  logger.info(up, "closure uploaded");
  return dag;
}

/**
 * A DAG evaluated elsewhere (the JSONL schema of nixpkgs graph dumps), as when
 * evaluation runs on a separate machine. Its .drv files must already be in the
 * cache for real workers; load tests pair it with fake executors.
 */
async function loadDagFile(file: string, ctx: CommandContext): Promise<{ nodes: DrvNode[]; roots: string[] }> {
  const all = await loadJsonlDag(file);
  const given = String(ctx.flags.roots ?? "").split(",").filter(Boolean);
  const used = new Set(all.flatMap((n) => n.inputDrvs.map((i) => i.drvPath)));
  const roots = given.length ? given : all.filter((n) => !used.has(n.drvPath)).map((n) => n.drvPath);
  return { nodes: given.length ? cutClosure(all, roots) : all, roots };
}

/** Streams progress until the job ends; re-attaches if the coordinator restarts. */
export async function follow(client: FarmServiceClient, ctx: CommandContext, jobId: string): Promise<JobStatus> {
  const tty = process.stderr.isTTY && !ctx.json;
  let last = "";
  let lastPrinted = 0;
  const show = (job: JobStatus) => {
    if (ctx.json) return;
    const line = progressLine(job);
    if (tty) process.stderr.write(`\r\x1b[K${line}`);
    else if (line !== last && (Date.now() - lastPrinted > 5000 || job.state !== "running")) {
      process.stderr.write(`${line}\n`);
      lastPrinted = Date.now();
    }
    last = line;
  };
  const watchOnce = () =>
    new Promise<JobStatus>((resolve, reject) => {
      let latest: JobStatus | undefined;
      const stream = client.watchJob({ jobId, derivations: false }, authMetadata(ctx.config.token));
      stream.on("data", (job: JobStatus) => {
        latest = job;
        show(job);
      });
      stream.on("error", (err: ServiceError) => reject(rpcError(err, ctx.config)));
      stream.on("end", () => (latest && latest.state !== "running" ? resolve(latest) : reject(new RpcError("progress stream ended early", grpcStatus.UNAVAILABLE))));
    });
  const final = await pRetry(watchOnce, {
    retries: 60,
    minTimeout: 500,
    maxTimeout: 5000,
    shouldRetry: (err) => err instanceof RpcError && err.code === grpcStatus.UNAVAILABLE,
    onFailedAttempt: (err) => {
      if (!ctx.json) process.stderr.write(`${tty ? "\n" : ""}lost the coordinator (${err.message}); re-attaching ...\n`);
    },
  });
  if (tty) process.stderr.write("\n");
  // The stream carries counts only; fetch failures with log tails for the summary.
  return call(client, ctx.config, client.getJob, { jobId, derivations: false }).catch(() => final);
}
