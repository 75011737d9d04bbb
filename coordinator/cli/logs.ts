// `farm logs <drv>`
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { InvalidInputError } from "../core/errors.js";

/**
 * A build log as a terminal may show it: a build writes what it likes, so
 * control characters (escape sequences that move the cursor, retitle the
 * window or hide text) are shown as `\xNN`; tabs and newlines stay.
 */
export function printable(log: string): string {
  return log.replace(/[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Prints the stored build log of a derivation. */
export async function run(ctx: CommandContext): Promise<number> {
  const [drvPath] = ctx.positionals;
  if (!drvPath) throw new InvalidInputError("which derivation? usage: farm logs <drv-path>");
  const client = connectFarm(ctx.config);
  try {
    const res = await call(client, ctx.config, client.getLog, { drvPath });
    ctx.out(ctx.json ? JSON.stringify({ drvPath: res.drvPath, log: res.log }) : printable(res.log.replace(/\n$/, "")));
    return 0;
  } finally {
    client.close();
  }
}
