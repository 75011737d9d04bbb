// `farm withdraw <worker>`: after revoking a worker's token, take out of the
// cache what that worker alone built (no second build confirmed it). Those
// derivations are built again when a job next wants them.
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { InvalidInputError } from "../core/errors.js";

/** Withdraws (or with --dry-run lists) the outputs a worker built alone. */
export async function run(ctx: CommandContext): Promise<number> {
  const [workerId] = ctx.positionals;
  if (!workerId || ctx.positionals.length > 1) throw new InvalidInputError("which worker? usage: farm withdraw <worker> [--dry-run]");
  const dryRun = Boolean(ctx.flags["dry-run"]);
  const client = connectFarm(ctx.config);
  try {
    const res = await call(client, ctx.config, client.withdraw, { workerId, dryRun });
    if (ctx.json) {
      ctx.out(JSON.stringify({ workerId, dryRun, storePaths: res.storePaths, drvPaths: res.drvPaths }, null, 2));
    } else {
      const verb = dryRun ? "would withdraw" : "withdrew";
      ctx.out(`${verb} ${res.storePaths.length} output(s) of ${res.drvPaths.length} derivation(s) that ${workerId} built alone`);
      for (const p of res.storePaths) ctx.out(`  ${p}`);
    }
    return 0;
  } finally {
    client.close();
  }
}
