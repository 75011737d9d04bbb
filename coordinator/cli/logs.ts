// `farm logs <drv>`
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { InvalidInputError } from "../core/errors.js";

/** Prints the stored build log of a derivation. */
export async function run(ctx: CommandContext): Promise<number> {
  const [drvPath] = ctx.positionals;
  if (!drvPath) throw new InvalidInputError("which derivation? usage: farm logs <drv-path>");
  const client = connectFarm(ctx.config);
  try {
    const res = await call(client, ctx.config, client.getLog, { drvPath });
    ctx.out(ctx.json ? JSON.stringify({ drvPath: res.drvPath, log: res.log }) : res.log.replace(/\n$/, ""));
    return 0;
  } finally {
    client.close();
  }
}
