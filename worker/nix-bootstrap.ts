// Which Nix the worker runs. A host that has one keeps using it; a bare
// container (Node, no root, no Nix) installs the one the farm published in its
// cache (`farm publish-nix`, the package index's `nix`), with the same checks
// as `farm install`: the index's signature, each narinfo's signature, each
// NAR's hash, and paths renamed into the store only whole. The installed paths
// are then registered in Nix's own database and rooted, so the worker's
// `nix-store --gc` can never delete the Nix it is running.

import { symlinkSync, renameSync, mkdirSync } from "node:fs";
import path from "node:path";
import { execa } from "execa";
import type { Logger } from "pino";
import { FarmError } from "../proto/errors.js";
import { CacheClient, currentEntry, findOnPath, parseNixVersion, type NarInfo } from "../proto/nix/mod.js";
import { installClosure } from "../proto/nix/install/mod.js";

/** Where the worker's Nix comes from: the host's if it has one, else the cache ("auto"), or forced. */
export type NixChoice = "auto" | "host" | "cache";

/** The Nix a worker runs, as its join message and logs describe it. */
export interface NixInUse {
  /** `2.8.0`. */
  version: string;
  /** Directory to put first on PATH; undefined for the host's own (already on PATH). */
  binDir?: string;
  /** Where it came from, for people: `host /usr/bin/nix-store` or `cache …-nix-2.8.0 (…)`. */
  source: string;
}

/** The worker can't get a Nix: a configuration problem, shown as one line at start. */
export class NixUnavailableError extends FarmError {}

/** What choosing and installing a Nix needs. */
export interface NixBootstrapOptions {
  choice: NixChoice;
  storeDir: string;
  stateDir: string;
  logDir: string;
  /** The farm cache and its key, from the worker's config (needed only to install from the cache). */
  cacheUrl: string;
  cachePublicKey: string;
  /** The PATH the worker runs with. */
  pathEnv: string;
  logger: Logger;
}

/** The GC root (in Nix's state dir) that keeps the bootstrapped Nix alive. */
export function nixRootLink(stateDir: string): string {
  return path.join(stateDir, "gcroots", "farm-worker-nix");
}

/** Picks the worker's Nix, installing it from the cache when the host has none (or when told to). */
export async function provideNix(opts: NixBootstrapOptions): Promise<NixInUse> {
  const host = findOnPath("nix-store", opts.pathEnv);
  if (opts.choice === "host" || (opts.choice === "auto" && host)) {
    if (!host) throw new NixUnavailableError("FARM_NIX=host, but there is no nix-store on PATH");
    return { version: await nixVersion(host, opts), source: `host ${host}` };
  }
  return installFromCache(opts);
}

async function installFromCache(opts: NixBootstrapOptions): Promise<NixInUse> {
  if (!opts.cacheUrl || !opts.cachePublicKey) {
    throw new NixUnavailableError(
      "this host has no Nix (no nix-store on PATH), so the worker installs the farm's own from its cache: " +
        "set FARM_CACHE_URL and FARM_CACHE_PUBLIC_KEY (the operator gives them out with the token)",
    );
  }
  const { logger, storeDir } = opts;
  const client = new CacheClient({ baseUrl: opts.cacheUrl, trustedPublicKeys: [opts.cachePublicKey], storeDir, logger });
  const entry = currentEntry(await client.packageIndex(), "nix");
  const main = entry?.outputs.out;
  if (!entry || !main) {
    throw new NixUnavailableError(`the cache ${opts.cacheUrl} publishes no Nix yet: the farm's operator runs 'farm publish-nix' once`);
  }
  logger.info({ storePath: main, source: entry.source, builtAt: entry.builtAt }, "no Nix on this host: installing the farm's Nix from its cache");
  const started = Date.now();
  const installed = await installClosure({ client, storeDir, paths: [main], logger });
  const binDir = path.join(main, "bin");
  const nixStore = path.join(binDir, "nix-store");
  const version = await nixVersion(nixStore, opts);
  await registerInNixDb(nixStore, main, await client.closure([main]), opts);
  logger.info({ storePath: main, version, fetched: installed.installed.length, seconds: (Date.now() - started) / 1000 }, `running Nix ${version} from the farm's cache`);
  return { version, binDir, source: `cache ${main} (${entry.source}, published ${entry.builtAt})` };
}

/** The environment the worker's own Nix queries run in: its dirs, never the compiled-in /nix (not ours to write). */
function queryEnv(opts: NixBootstrapOptions): NodeJS.ProcessEnv {
  return { PATH: "/usr/bin:/bin", NIX_STORE_DIR: opts.storeDir, NIX_STATE_DIR: opts.stateDir, NIX_LOG_DIR: opts.logDir, HOME: opts.stateDir };
}

async function nixVersion(nixStore: string, opts: NixBootstrapOptions): Promise<string> {
  try {
    mkdirSync(opts.stateDir, { recursive: true });
    const { stdout } = await execa(nixStore, ["--version"], { env: queryEnv(opts), extendEnv: false, timeout: 30_000 });
    return parseNixVersion(stdout);
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? "").trim().split("\n").find((l) => l.startsWith("error:"));
    throw new NixUnavailableError(`${nixStore} does not run: ${stderr ?? (err as Error).message.split("\n")[0]}`, { cause: err });
  }
}

/**
 * Tells the installed Nix about the paths it runs from (`--load-db`, the format
 * of `--dump-db`) and roots them: without that, its garbage collector would
 * delete them as invalid paths.
 */
async function registerInNixDb(nixStore: string, main: string, infos: NarInfo[], opts: NixBootstrapOptions): Promise<void> {
  await execa(nixStore, ["--load-db"], { input: dumpDbFormat(infos, opts.storeDir), env: queryEnv(opts), extendEnv: false });
  const root = nixRootLink(opts.stateDir);
  mkdirSync(path.dirname(root), { recursive: true });
  const tmp = `${root}.tmp-${process.pid}`;
  symlinkSync(main, tmp);
  renameSync(tmp, root);
}

/** Valid-path records as `nix-store --dump-db` prints them: path, hash, size, deriver, references. */
export function dumpDbFormat(infos: NarInfo[], storeDir: string): string {
  return infos
    .map((i) => [i.storePath, i.narHash, String(i.narSize), i.deriver ? `${storeDir}/${i.deriver}` : "", String(i.references.length), ...i.references.map((r) => `${storeDir}/${r}`)].join("\n") + "\n")
    .join("");
}
