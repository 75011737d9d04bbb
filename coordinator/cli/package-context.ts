// What the package verbs (install, search, list, upgrade, remove, rollback, gc)
// share on the command line: the cache client with the user's own trusted
// keys, the verified index, the profile, and how progress is shown. Nothing
// here needs a coordinator or a token.
import pino from "pino";
import type { CommandContext } from "./main.js";
import { CacheClient } from "../../proto/nix/mod.js";
import { InvalidInputError } from "../core/errors.js";
import { Profile } from "./install/profile-generations.js";
import type { VerbDeps } from "./install/package-verbs.js";
import { progressReporter } from "./install/progress.js";
import { nixOwnPaths, registerWithNix, unregisterFromNix } from "./install/nix-registration.js";
import { installedPaths } from "./install/gc.js";

/** The verbs' dependencies from the CLI config; `cacheUrl` overrides the configured one (asked from a coordinator). */
export function verbDeps(ctx: CommandContext, opts: { cache: boolean; cacheUrl?: string }): VerbDeps & { client?: CacheClient } {
  const logger = pino({ level: process.env.FARM_LOG_LEVEL ?? "warn" }, pino.destination(2));
  const { storeDir } = ctx.config;
  const profile = new Profile(ctx.config.profile, storeDir, logger);
  const deps: VerbDeps & { client?: CacheClient } = {
    profile,
    storeDir,
    logger,
    // A stock Nix on this host sees what farm installed, and gc never deletes what Nix built on it.
    onInstalled: async () => void (await registerWithNix(storeDir, logger, ctx.err)),
    beforeDelete: (paths) => unregisterFromNix(storeDir, paths),
    extraRoots: async () => nixOwnPaths(storeDir, new Set((await installedPaths(storeDir)).keys())),
  };
  if (!opts.cache) return deps;
  if (ctx.config.trustedKey.length === 0) {
    throw new InvalidInputError("no trusted key: pass --trusted-key NAME:KEY (or set FARM_TRUSTED_KEYS) with the farm's public key");
  }
  const baseUrl = opts.cacheUrl || ctx.config.cacheUrl;
  if (!baseUrl) throw new InvalidInputError("no cache: pass --cache-url URL (or set FARM_CACHE_URL) with the farm's cache URL");
  const client = new CacheClient({ baseUrl, trustedPublicKeys: ctx.config.trustedKey, storeDir, logger });
  let checked: Promise<unknown> | undefined;
  const ready = () => (checked ??= client.cacheInfo());
  return {
    ...deps,
    client,
    source: {
      storeDir,
      closure: async (paths, o) => (await ready(), client.closure(paths, o)),
      narStream: (info) => client.narStream(info),
    },
    index: async () => (await ready(), client.packageIndex()),
    onProgress: ctx.json ? undefined : progressReporter(ctx.err),
  };
}
