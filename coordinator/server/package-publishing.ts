// What goes into the package index and when: a succeeded job that was
// submitted for a name (JobRecord.publish), and an operator's publish or
// withdraw by hand. The outputs always come from the farm's own records (the
// job's root derivations), never from what a submitter says; the writer
// refuses any path the cache does not hold signed.
import type { Logger } from "pino";
import type { Scheduler } from "../core/scheduler.js";
import type { JobRecord } from "../core/types.js";
import { InvalidInputError } from "../core/errors.js";
import type { PublishRequest } from "../../proto/convert/mod.js";
import type { PackageIndexWriter } from "../cache/package-index-writer.js";
import { NotFoundError } from "./farm-service.js";

/** The outputs of a job's roots, by output name (a second root's outputs get a suffix: out-1, ...). */
export function rootOutputs(job: JobRecord, outputsOf: (drvPath: string) => Record<string, string> | undefined): Record<string, string> {
  const all: Record<string, string> = {};
  job.roots.forEach((root, i) => {
    for (const [name, path] of Object.entries(outputsOf(root) ?? {})) all[i === 0 ? name : `${name}-${i}`] = path;
  });
  return all;
}

/** What a publish or withdraw answers. */
export interface PublishAnswer {
  name: string;
  outputs: Record<string, string>;
  serial: number;
}

/** Feeds the package index from job results and operators. */
export class PackagePublishing {
  constructor(private readonly d: { scheduler: Scheduler; writer: PackageIndexWriter; logger: Logger }) {}

  private outputsOf(job: JobRecord): Record<string, string> {
    return rootOutputs(job, (p) => this.d.scheduler.drv(p)?.node.outputs);
  }

  /** A job finished: publish it if it succeeded and was submitted for a name. Never throws (logs). */
  async jobFinished(jobId: string): Promise<void> {
    const job = this.d.scheduler.job(jobId);
    if (!job || job.state !== "succeeded" || !job.publish) return;
    try {
      await this.d.writer.publish({ ...job.publish, outputs: this.outputsOf(job), jobId, builtAt: new Date(job.finishedAtMs ?? Date.now()) });
    } catch (err) {
      this.d.logger.error({ err, job: jobId, name: job.publish.name }, "publishing a succeeded job in the package index failed");
    }
  }

  /**
   * After a restart: publishes succeeded jobs that finished after the index last
   * changed and are not in it (the coordinator stopped between persisting the
   * job and writing the index), oldest first.
   */
  async catchUp(): Promise<number> {
    const since = await this.d.writer.lastPublishedMs();
    const missed = this.d.scheduler
      .jobs()
      .filter((j) => j.state === "succeeded" && j.publish && (j.finishedAtMs ?? 0) >= since)
      .sort((a, b) => (a.finishedAtMs ?? 0) - (b.finishedAtMs ?? 0));
    let n = 0;
    for (const job of missed) {
      if (await this.d.writer.has(job.publish!.name, job.jobId)) continue;
      await this.jobFinished(job.jobId);
      n++;
    }
    return n;
  }

  /** An operator publishes a name: given outputs, or a succeeded job's root outputs. */
  async publish(req: PublishRequest): Promise<PublishAnswer> {
    let outputs = req.outputs;
    let source = req.source;
    let jobId: string | undefined;
    if (req.jobId !== undefined) {
      const job = this.d.scheduler.job(req.jobId);
      if (!job) throw new NotFoundError(`no job '${req.jobId}'`);
      if (job.state !== "succeeded") throw new InvalidInputError(`job ${req.jobId} is ${job.state}; only a succeeded job's outputs can be published`);
      outputs = this.outputsOf(job);
      source ||= job.publish?.source ?? job.description;
      jobId = job.jobId;
    }
    const { entry, serial } = await this.d.writer.publish({ name: req.name, outputs: outputs!, source, jobId, builtAt: new Date() });
    return { name: entry.name, outputs: entry.outputs, serial };
  }

  /** An operator withdraws a name and its history. */
  async unpublish(name: string): Promise<PublishAnswer> {
    const { removed, serial } = await this.d.writer.unpublish(name);
    if (!removed) throw new NotFoundError(`the package index has no '${name}'`);
    return { name, outputs: {}, serial };
  }
}
