// `farm status [job]`
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { jobDetail, jobsTable } from "./format.js";
import { JobStatus } from "../../proto/gen/farm.js";

/** Prints all jobs, or one job (with --derivations, a row per derivation). */
export async function run(ctx: CommandContext): Promise<number> {
  const client = connectFarm(ctx.config);
  try {
    const [jobId] = ctx.positionals;
    if (!jobId) {
      const res = await call(client, ctx.config, client.listJobs, {});
      ctx.out(ctx.json ? JSON.stringify(res.jobs.map((j) => JobStatus.toJSON(j)), null, 2) : jobsTable(res.jobs));
      return 0;
    }
    const job = await call(client, ctx.config, client.getJob, { jobId, derivations: Boolean(ctx.flags.derivations) || ctx.json });
    ctx.out(ctx.json ? JSON.stringify(JobStatus.toJSON(job), null, 2) : jobDetail(job));
    return 0;
  } finally {
    client.close();
  }
}
