// `farm install <store-path | ref>`: install from the farm's cache with no Nix
// and no root. Trust comes only from the user's own config (--trusted-key);
// the coordinator is asked at most where the cache is and which job built a ref.
import pino from "pino";
import type { CommandContext } from "./main.js";
import { connectFarm, call } from "./rpc.js";
import { CacheClient, isStorePath } from "../../proto/nix/mod.js";
import { installPaths } from "./install/mod.js";
import { InvalidInputError } from "../core/errors.js";
import { formatBytes } from "./format.js";
import type { JobStatus } from "../../proto/gen/farm.js";

/** Installs a path (or the outputs of the latest successful job for a ref) and links its programs. */
export async function run(ctx: CommandContext): Promise<number> {
  const [target] = ctx.positionals;
  if (!target || ctx.positionals.length > 1) throw new InvalidInputError("usage: farm install <store-path | ref>");
  if (ctx.config.trustedKey.length === 0) {
    throw new InvalidInputError("no trusted key: pass --trusted-key NAME:KEY (or set FARM_TRUSTED_KEYS) with the farm's public key");
  }
  const logger = pino({ level: process.env.FARM_LOG_LEVEL ?? "warn" }, pino.destination(2));
  const { storeDir } = ctx.config;
  let cacheUrl = ctx.config.cacheUrl;
  let paths: string[];
  if (isStorePath(target, storeDir)) {
    paths = [target];
  } else {
    const resolved = await resolveRef(ctx, target);
    paths = resolved.paths;
    cacheUrl ||= resolved.cacheUrl;
  }
  if (!cacheUrl) cacheUrl = (await askCoordinator(ctx, (c) => call(c, ctx.config, c.getInfo, {}))).cacheUrl;

  const client = new CacheClient({ baseUrl: cacheUrl, trustedPublicKeys: ctx.config.trustedKey, storeDir, logger });
  await client.cacheInfo();
  const result = await installPaths({
    client,
    storeDir,
    paths,
    profileDir: ctx.config.profile,
    logger,
    onProgress: (p) => {
      if (ctx.json) return;
      if (p.phase === "resolved") ctx.err(`${p.total} paths to fetch (${formatBytes(p.bytesTotal)} unpacked)`);
      if (p.phase === "installed") ctx.err(`[${p.done}/${p.total}] ${p.storePath}`);
    },
  });
  if (ctx.json) {
    ctx.out(JSON.stringify({ paths, ...result }, null, 2));
  } else {
    ctx.out(`installed ${result.installed.length} paths (${result.alreadyPresent.length} already present)`);
    for (const l of result.linked) ctx.out(`linked ${l}`);
    for (const l of result.skippedLinks) ctx.err(`left alone ${l} (not ours)`);
    if (result.linked.length) ctx.out(`add ${ctx.config.profile}/bin to PATH to use them`);
  }
  return 0;
}

/** Output paths of the newest successful job submitted as `ref` ('out' outputs where there is one). */
async function resolveRef(ctx: CommandContext, ref: string): Promise<{ paths: string[]; cacheUrl: string }> {
  return askCoordinator(ctx, async (client) => {
    const [{ jobs }, info] = await Promise.all([call(client, ctx.config, client.listJobs, {}), call(client, ctx.config, client.getInfo, {})]);
    const job = jobs
      .filter((j: JobStatus) => j.description === ref && j.state === "succeeded")
      .sort((a, b) => b.createdUnixMs - a.createdUnixMs)[0];
    if (!job) throw new InvalidInputError(`'${ref}' is neither a store path under ${ctx.config.storeDir} nor a ref the farm has built ('farm submit ${ref}' first)`);
    const full = await call(client, ctx.config, client.getJob, { jobId: job.jobId, derivations: false });
    const paths = full.outputs.flatMap((r) => (r.outputs.out ? [r.outputs.out] : Object.values(r.outputs)));
    return { paths, cacheUrl: info.cacheUrl };
  });
}

async function askCoordinator<T>(ctx: CommandContext, fn: (c: ReturnType<typeof connectFarm>) => Promise<T>): Promise<T> {
  const client = connectFarm(ctx.config);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}
