// `farm install NAME|STORE-PATH|REF...`: install from the farm's cache with no
// Nix, no root and no token. A name is looked up in the cache's signed index;
// trust comes only from the user's own config (--trusted-key). A ref
// (nixpkgs#x, ./f.nix#x) is an operator's shortcut: the coordinator is asked
// which job built it.
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { isPackageName, isStorePath } from "../../proto/nix/mod.js";
import { InvalidInputError } from "../core/errors.js";
import type { JobStatus } from "../../proto/gen/farm.js";
import { installTargets } from "./install/package-verbs.js";
import { verbDeps } from "./package-context.js";

/** Installs names, store paths or built refs into a new profile generation. */
export async function run(ctx: CommandContext): Promise<number> {
  if (ctx.positionals.length === 0) throw new InvalidInputError("usage: farm install <name | store-path | ref>...");
  const { storeDir } = ctx.config;
  const targets: string[] = [];
  let cacheUrl = "";
  for (const t of ctx.positionals) {
    if (isStorePath(t, storeDir) || isPackageName(t)) {
      targets.push(t);
      continue;
    }
    const resolved = await resolveRef(ctx, t);
    targets.push(...resolved.paths);
    cacheUrl ||= resolved.cacheUrl;
  }
  // An operator with a token but no cache URL configured: the coordinator says where its cache is.
  if (!ctx.config.cacheUrl && !cacheUrl && ctx.config.token) cacheUrl = await askCacheUrl(ctx);
  const d = verbDeps(ctx, { cache: true, cacheUrl: ctx.config.cacheUrl || cacheUrl });
  const change = await installTargets(d, targets);
  if (ctx.json) {
    ctx.out(JSON.stringify(change, null, 2));
    return 0;
  }
  ctx.out(`installed ${change.installed.length} paths (${change.alreadyPresent.length} already present); generation ${change.generation}`);
  for (const l of change.linked) ctx.out(`linked ${l}`);
  if (change.linked.length) ctx.out(`add ${ctx.config.profile}/bin to PATH to use them`);
  return 0;
}

async function askCacheUrl(ctx: CommandContext): Promise<string> {
  const client = connectFarm(ctx.config);
  try {
    return (await call(client, ctx.config, client.getInfo, {})).cacheUrl;
  } finally {
    client.close();
  }
}

/** Output paths of the newest successful job submitted as `ref` ('out' outputs where there is one). */
async function resolveRef(ctx: CommandContext, ref: string): Promise<{ paths: string[]; cacheUrl: string }> {
  if (!ctx.config.token) throw new InvalidInputError(`'${ref}' is neither a package name, nor a store path under ${ctx.config.storeDir}; a ref needs a coordinator and its token`);
  const client = connectFarm(ctx.config);
  try {
    const [{ jobs }, info] = await Promise.all([call(client, ctx.config, client.listJobs, {}), call(client, ctx.config, client.getInfo, {})]);
    const job = jobs
      .filter((j: JobStatus) => j.description === ref && j.state === "succeeded")
      .sort((a, b) => b.createdUnixMs - a.createdUnixMs)[0];
    if (!job) throw new InvalidInputError(`'${ref}' is neither a store path under ${ctx.config.storeDir} nor a ref the farm has built ('farm submit ${ref}' first)`);
    const full = await call(client, ctx.config, client.getJob, { jobId: job.jobId, derivations: false });
    const paths = full.outputs.flatMap((r) => (r.outputs.out ? [r.outputs.out] : Object.values(r.outputs)));
    return { paths, cacheUrl: info.cacheUrl };
  } finally {
    client.close();
  }
}
