// `farm workers`
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { workersTable } from "./format.js";
import { WorkerStatus } from "../../proto/gen/farm.js";

/** Lists workers with free memory, remaining lifetime and running builds. */
export async function run(ctx: CommandContext): Promise<number> {
  const client = connectFarm(ctx.config);
  try {
    const res = await call(client, ctx.config, client.listWorkers, {});
    ctx.out(ctx.json ? JSON.stringify(res.workers.map((w) => WorkerStatus.toJSON(w)), null, 2) : workersTable(res.workers));
    return 0;
  } finally {
    client.close();
  }
}
