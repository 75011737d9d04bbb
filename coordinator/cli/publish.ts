// `farm publish NAME PATH...|--job ID` and `farm unpublish NAME` (admin): put a
// name in the package index by hand, or withdraw it. The coordinator refuses
// paths its cache does not hold signed.
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { InvalidInputError } from "../core/errors.js";

const USAGE = "usage: farm publish NAME [OUT=]STORE-PATH... [--source TEXT] | farm publish NAME --job ID; farm unpublish NAME";

/** `OUT=PATH` or a bare PATH (out, then out-1, out-2, ...) → output name → path. */
export function outputsFromArgs(args: string[]): Record<string, string> {
  const outputs: Record<string, string> = {};
  args.forEach((a, i) => {
    const eq = a.indexOf("=");
    const [out, path] = eq > 0 && !a.startsWith("/") ? [a.slice(0, eq), a.slice(eq + 1)] : [i === 0 ? "out" : `out-${i}`, a];
    if (outputs[out]) throw new InvalidInputError(`output '${out}' given twice`);
    outputs[out] = path;
  });
  return outputs;
}

/** Publishes a name by hand. */
export async function run(ctx: CommandContext): Promise<number> {
  const [name, ...paths] = ctx.positionals;
  const jobId = (ctx.flags.job as string | undefined) ?? "";
  if (!name || (jobId ? paths.length > 0 : paths.length === 0)) throw new InvalidInputError(USAGE);
  const client = connectFarm(ctx.config);
  try {
    const req = { name, outputs: jobId ? {} : outputsFromArgs(paths), source: String(ctx.flags.source ?? ""), jobId };
    const res = await call(client, ctx.config, client.publishPackage, req);
    if (ctx.json) ctx.out(JSON.stringify(res, null, 2));
    else ctx.out(`published ${res.name} (index serial ${res.serial}): ${Object.entries(res.outputs).map(([o, p]) => `${o}=${p}`).join(" ")}`);
    return 0;
  } finally {
    client.close();
  }
}

/** Withdraws a name (and its history) from the index. */
export async function runUnpublish(ctx: CommandContext): Promise<number> {
  const [name] = ctx.positionals;
  if (!name || ctx.positionals.length > 1) throw new InvalidInputError(USAGE);
  const client = connectFarm(ctx.config);
  try {
    const res = await call(client, ctx.config, client.unpublishPackage, { name });
    if (ctx.json) ctx.out(JSON.stringify(res, null, 2));
    else ctx.out(`unpublished ${name} (index serial ${res.serial})`);
    return 0;
  } finally {
    client.close();
  }
}
