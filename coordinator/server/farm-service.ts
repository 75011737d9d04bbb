// The CLI side of the gRPC server. Authenticates every call, validates input
// through proto/convert/ and maps named errors onto gRPC status codes. A CLI
// token sees, watches and cancels only its own jobs (an admin token, all): to
// anyone else another's job does not exist.
import { status, type ServerReadableStream, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { FarmInfo, FarmServiceServer, JobStatus, WorkerStatus, GetJobRequest, SubmitRequest, SubmitResponse } from "../../proto/gen/farm.js";
import { nodeFromWire, publishRequestFromWire, publishSpecFromSubmit, unpublishRequestFromWire, type PublishRequest, type PublishSpec } from "../../proto/convert/mod.js";
import type { DrvNode } from "../core/types.js";
import { AuthError, FarmError, InvalidInputError } from "../core/errors.js";
import { mayPublishNames, type Principal, type TokenRegistry } from "./auth.js";

/** A job id or derivation that does not exist. */
export class NotFoundError extends FarmError {}

/** What the coordinator shell offers the CLI. Status values are already in wire shape. */
export interface FarmApi {
  info(): FarmInfo;
  submit(req: { nodes: DrvNode[]; roots: string[]; description: string; idempotencyKey: string; owner: string; publish?: PublishSpec }): Promise<{ jobId: string; existing: boolean }>;
  /** The job, if it exists and `viewer` may see it. */
  job(jobId: string, derivations: boolean, viewer: Principal): JobStatus | undefined;
  jobs(viewer: Principal): JobStatus[];
  workers(): WorkerStatus[];
  /** The build log, if `viewer` may see a job that wants the derivation. */
  log(drvPath: string, viewer: Principal): Promise<string | undefined>;
  cancel(jobId: string, viewer: Principal): Promise<JobStatus | undefined>;
  /** Unpublishes what `workerId` built alone (admin only). */
  withdraw(workerId: string, dryRun: boolean): Promise<{ storePaths: string[]; drvPaths: string[] }>;
  /** Publishes a name in the package index (admin only). */
  publishPackage(req: PublishRequest): Promise<{ name: string; outputs: Record<string, string>; serial: number }>;
  /** Removes a name from the package index (admin only). */
  unpublishPackage(name: string): Promise<{ name: string; outputs: Record<string, string>; serial: number }>;
  /** Calls `onChange` after every change of the job; returns an unsubscribe function. */
  watch(jobId: string, onChange: () => void): () => void;
}

/** Builds the FarmService implementation. */
export function createFarmService(deps: { api: FarmApi; tokens: TokenRegistry; storeDir: string; maxDagNodes: number; logger: Logger; watchIntervalMs?: number }): FarmServiceServer {
  const { api, tokens, storeDir, logger } = deps;
  const auth = (call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown> | ServerReadableStream<unknown, unknown>) =>
    tokens.authenticate(call.metadata.get("authorization")[0]?.toString(), ["cli"]);

  /** Wraps a unary handler: auth, then errors to status codes. */
  function unary<Req, Res>(name: string, fn: (req: Req, caller: Principal) => Promise<Res> | Res) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      Promise.resolve()
        .then(() => auth(call as ServerUnaryCall<unknown, unknown>))
        .then((caller) => fn(call.request, caller))
        .then(
          (res) => callback(null, res),
          (err) => callback(toStatus(err, name, logger)),
        );
    };
  }

  /** Over the limit: refused as soon as it is known (mid-stream too). */
  const checkDagLimit = (n: number) => {
    if (n > deps.maxDagNodes) throw new InvalidInputError(`DAG has ${n} derivations or more; this coordinator accepts at most ${deps.maxDagNodes}`);
  };
  /** A whole DAG's size: not empty, not over the limit. */
  const checkDagSize = (n: number) => {
    if (n === 0) throw new InvalidInputError("submit carries no derivations");
    checkDagLimit(n);
  };

  /** A whole submit, its nodes converted: the header's fields from its (first) request. */
  async function submitNodes(header: SubmitRequest, nodes: DrvNode[], caller: Principal): Promise<SubmitResponse> {
    const description = header.description.slice(0, 500);
    // Only the operator's submitters name what users install (see mayPublishNames).
    const publish = mayPublishNames(caller) ? publishSpecFromSubmit({ description, noPublish: header.noPublish, source: header.source }) : undefined;
    const res = await api.submit({ nodes, roots: header.roots, description, idempotencyKey: header.idempotencyKey.slice(0, 200), owner: caller.name, publish });
    return { jobId: res.jobId, existing: res.existing, status: api.job(res.jobId, false, caller) };
  }

  const mustFind = (jobId: string, job: JobStatus | undefined) => {
    if (!job) throw new NotFoundError(`no job '${jobId}'`);
    return job;
  };

  return {
    getInfo: unary("getInfo", () => api.info()),
    submit: unary("submit", async (req, caller) => {
      checkDagSize(req.nodes.length);
      return submitNodes(req, await convertInSlices(req.nodes, storeDir), caller);
    }),
    submitStream(call: ServerReadableStream<SubmitRequest, SubmitResponse>, callback: sendUnaryData<SubmitResponse>) {
      let header: SubmitRequest | undefined;
      const nodes: DrvNode[] = [];
      let failed = false;
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true; // the rest of a refused submit is read and dropped
        callback(toStatus(err, "submitStream", logger));
      };
      Promise.resolve()
        .then(() => auth(call))
        .then(
          (caller) => {
            // Each piece is converted as it arrives (its decode was already a small one).
            call.on("data", (piece: SubmitRequest) => {
              if (failed) return;
              try {
                header ??= piece;
                checkDagLimit(nodes.length + piece.nodes.length);
                for (const n of piece.nodes) nodes.push(nodeFromWire(n, storeDir));
              } catch (err) {
                fail(err);
              }
            });
            call.on("end", () => {
              if (failed) return;
              try {
                checkDagSize(nodes.length);
              } catch (err) {
                return fail(err);
              }
              submitNodes(header!, nodes, caller).then((res) => callback(null, res), fail);
            });
            call.on("error", fail);
          },
          fail,
        );
    },
    getJob: unary("getJob", (req: GetJobRequest, caller) => mustFind(req.jobId, api.job(req.jobId, req.derivations, caller))),
    listJobs: unary("listJobs", (_req, caller) => ({ jobs: api.jobs(caller) })),
    listWorkers: unary("listWorkers", () => ({ workers: api.workers() })),
    getLog: unary("getLog", async (req, caller) => {
      const log = await api.log(req.drvPath, caller);
      if (log === undefined) throw new NotFoundError(`no log for ${req.drvPath}`);
      return { drvPath: req.drvPath, log };
    }),
    cancelJob: unary("cancelJob", async (req, caller) => mustFind(req.jobId, await api.cancel(req.jobId, caller))),
    withdraw: unary("withdraw", async (req, caller) => {
      if (caller.role !== "admin") throw new AuthError("only an admin token may withdraw outputs");
      if (!/^[A-Za-z0-9._-]{1,128}$/.test(req.workerId)) throw new InvalidInputError(`'${req.workerId}' is not a worker id`);
      return api.withdraw(req.workerId, req.dryRun);
    }),
    publishPackage: unary("publishPackage", async (req, caller) => {
      if (caller.role !== "admin") throw new AuthError("only an admin token may publish packages");
      return api.publishPackage(publishRequestFromWire(req, storeDir));
    }),
    unpublishPackage: unary("unpublishPackage", async (req, caller) => {
      if (caller.role !== "admin") throw new AuthError("only an admin token may unpublish packages");
      return api.unpublishPackage(unpublishRequestFromWire(req).name);
    }),
    watchJob(call: ServerWritableStream<GetJobRequest, JobStatus>) {
      let caller: Principal;
      try {
        caller = auth(call as ServerWritableStream<unknown, unknown>);
      } catch (err) {
        call.emit("error", toStatus(err, "watchJob", logger));
        return;
      }
      const { jobId, derivations } = call.request;
      const first = api.job(jobId, derivations, caller);
      if (!first) {
        call.emit("error", { code: status.NOT_FOUND, details: `no job '${jobId}'` });
        return;
      }
      // Snapshots are coalesced: at most one per interval, and always the last one.
      let dirty = true;
      let closed = false;
      const flush = () => {
        if (!dirty || closed) return;
        dirty = false;
        const job = api.job(jobId, derivations, caller);
        if (!job) return finish();
        call.write(job);
        if (job.state !== "running") finish();
      };
      const timer = setInterval(flush, deps.watchIntervalMs ?? 500);
      const unsubscribe = api.watch(jobId, () => {
        dirty = true;
      });
      function finish() {
        if (closed) return;
        closed = true;
        clearInterval(timer);
        unsubscribe();
        call.end();
      }
      call.on("cancelled", finish);
      call.on("error", finish);
      flush();
    },
  };
}

/** Converts (and validates) wire nodes a few thousand at a time, letting other calls run in between. */
async function convertInSlices(wire: SubmitRequest["nodes"], storeDir: string): Promise<DrvNode[]> {
  const out: DrvNode[] = [];
  for (let i = 0; i < wire.length; i++) {
    out.push(nodeFromWire(wire[i], storeDir));
    if (i % 5000 === 4999) await new Promise((r) => setImmediate(r));
  }
  return out;
}

function toStatus(err: unknown, method: string, logger: Logger) {
  if (err instanceof AuthError) return { code: status.UNAUTHENTICATED, details: err.message };
  if (err instanceof InvalidInputError) return { code: status.INVALID_ARGUMENT, details: err.message };
  if (err instanceof NotFoundError) return { code: status.NOT_FOUND, details: err.message };
  if (err instanceof FarmError && err.retryable) return { code: status.UNAVAILABLE, details: err.message };
  logger.error({ err, method }, "farm call failed");
  return { code: status.INTERNAL, details: `coordinator error in ${method}: ${(err as Error)?.message ?? err}` };
}
