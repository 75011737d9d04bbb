// `farm cancel <job>`
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { progressLine } from "./format.js";
import { InvalidInputError } from "../core/errors.js";
import { JobStatus } from "../../proto/gen/farm.js";

/** Cancels a job; derivations other jobs still want keep building. */
export async function run(ctx: CommandContext): Promise<number> {
  const [jobId] = ctx.positionals;
  if (!jobId) throw new InvalidInputError("which job? usage: farm cancel <job>");
  const client = connectFarm(ctx.config);
  try {
    const job = await call(client, ctx.config, client.cancelJob, { jobId });
    ctx.out(ctx.json ? JSON.stringify(JobStatus.toJSON(job), null, 2) : `job ${job.jobId} ${job.state}\n${progressLine(job)}`);
    return 0;
  } finally {
    client.close();
  }
}
