// `farm publish-nix [--from STORE-PATH] [--nix BINARY]` (operator): puts a Nix
// that runs from the farm's store dir into the cache, signed, and publishes it
// in the package index as `nix`, where a bare-container worker (and `farm
// install nix`) finds it with only the cache URL and the farm's key.
//
// --from names a Nix the farm itself built (once it has built nixpkgs' nix);
// without it, the Nix installed here is relocated (relocate.ts) and uploaded
// as content-addressed paths, which the cache checks against their bytes.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import pino from "pino";
import type { CommandContext } from "../main.js";
import { connectFarm, call } from "../rpc.js";
import { InvalidInputError } from "../../core/errors.js";
import { CacheClient, dumpPath, findOnPath, parseStorePath, versionOfStorePath } from "../../../proto/nix/mod.js";
import { removeTree } from "../../../proto/nix/install/mod.js";
import { relocateHostNix, type RelocatedPath } from "./relocate.js";
import { formatBytes } from "../format.js";

/** The package index name workers and users look the farm's Nix up by. */
export const NIX_PACKAGE_NAME = "nix";

/** Relocates (or takes --from) a Nix, uploads it, and publishes it as `nix`. */
export async function run(ctx: CommandContext): Promise<number> {
  if (ctx.positionals.length > 0) throw new InvalidInputError("usage: farm publish-nix [--from STORE-PATH] [--nix BINARY]");
  const logger = pino({ level: process.env.FARM_LOG_LEVEL ?? "warn" }, pino.destination(2));
  const { storeDir } = ctx.config;
  const rpc = connectFarm(ctx.config);
  try {
    const info = await call(rpc, ctx.config, rpc.getInfo, {});
    const cache = new CacheClient({ baseUrl: ctx.config.cacheUrl || info.cacheUrl, trustedPublicKeys: [info.cachePublicKey], token: ctx.config.token, storeDir, logger });
    const from = ctx.flags.from as string | undefined;
    let main: string;
    let source: string;
    if (from) {
      parseStorePath(from, storeDir);
      if (!(await cache.narInfo(from))) throw new InvalidInputError(`${from} is not in the farm's cache: publish-nix --from takes a Nix the farm built`);
      main = from;
      source = `built by the farm (${path.basename(from)})`;
    } else {
      const nixBinary = (ctx.flags.nix as string | undefined) ?? "nix-store";
      const uploaded = await relocateAndUpload(cache, nixBinary.includes("/") ? nixBinary : onPath(nixBinary), storeDir, logger, (line) => (ctx.json ? undefined : ctx.err(line)));
      main = uploaded.storePath;
      source = `relocated from this operator's Nix ${versionOfStorePath(main, storeDir) ?? ""}`.trim();
    }
    const res = await call(rpc, ctx.config, rpc.publishPackage, { name: NIX_PACKAGE_NAME, outputs: { out: main }, source, jobId: "" });
    if (ctx.json) ctx.out(JSON.stringify({ name: res.name, storePath: main, source, serial: res.serial }, null, 2));
    else {
      ctx.out(`published ${main} as '${NIX_PACKAGE_NAME}' (index serial ${res.serial})`);
      ctx.out(`workers with no Nix install it at start; users run 'farm install ${NIX_PACKAGE_NAME}'`);
    }
    return 0;
  } finally {
    rpc.close();
  }
}

async function relocateAndUpload(cache: CacheClient, nixBinary: string, storeDir: string, logger: pino.Logger, say: (line: string) => void): Promise<RelocatedPath> {
  const workDir = await mkdtemp(path.join(tmpdir(), "farm-publish-nix-"));
  try {
    const relocated = await relocateHostNix({ nixBinary, storeDir, workDir, logger });
    say(`relocated Nix ${relocated.version} from ${nixBinary}: ${relocated.paths.length} paths, ${formatBytes(relocated.paths.reduce((n, p) => n + p.narSize, 0))}`);
    for (const p of relocated.paths) {
      // References first, as the cache requires; a path it has already is not sent again.
      if (await cache.narInfo(p.storePath)) {
        say(`already in the cache: ${p.storePath}`);
        continue;
      }
      await cache.upload({ storePath: p.storePath, references: p.references, narStream: dumpPath(p.dir), narHash: p.narHash, narSize: p.narSize });
      say(`uploaded ${p.storePath} (${formatBytes(p.narSize)})`);
    }
    return relocated.main;
  } finally {
    await removeTree(workDir); // read-only, as in a store
  }
}

/** The program's file on PATH, or a one-line refusal. */
function onPath(name: string): string {
  const file = findOnPath(name, process.env.PATH ?? "");
  if (!file) throw new InvalidInputError(`no ${name} on PATH: install Nix here (Debian: apt-get install nix-bin), pass --nix BINARY, or --from a Nix the farm built`);
  return file;
}
