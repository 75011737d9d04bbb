// Runs on the submitting machine: evaluates a user's reference with stock
// nix-instantiate (relocated to the farm's store dir), then reads the .drv
// closure straight from disk. The coordinator never evaluates Nix itself.

import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import pRetry, { AbortError } from "p-retry";
import type { Logger } from "pino";
import { FarmError } from "../../core/errors.js";
import type { DrvNode, DrvPath, StorePath } from "../../core/types.js";
import { drvNodeFromText } from "../../../proto/nix/mod.js";
import { EvaluationError, MissingFileError, NixNotInstalledError, nixEvalError } from "./nix-errors.js";
import { type BuildRef, parseRef, refSourceLabel } from "./ref.js";

/** nixpkgs used for `nixpkgs#attr` when none is given: the nixos-24.05 channel, frozen since 24.05 reached end of life. */
export const DEFAULT_NIXPKGS = "https://channels.nixos.org/nixos-24.05/nixexprs.tar.xz";

/** Inputs of instantiate(). */
export interface InstantiateOptions {
  /** `nixpkgs#attr.path`, `./file.nix#attr.path` or `/abs/file.nix#`. */
  ref: string;
  /** nixpkgs as a local path or a tarball URL; default DEFAULT_NIXPKGS. */
  nixpkgs?: string;
  storeDir: string;
  stateDir: string;
  logDir: string;
  logger: Logger;
  /** Directory relative file references are resolved against; default process.cwd(). */
  cwd?: string;
  /** Directory holding nix-instantiate and nix-store; default: found on PATH. */
  nixBinDir?: string;
}

/** The DAG of a reference. */
export interface InstantiateResult {
  /** The derivations the reference evaluates to (several for a list or attrset). */
  roots: DrvPath[];
  /** Every derivation of the closure of the roots. */
  nodes: DrvNode[];
  /** Every .drv file and input source of the closure: what workers must fetch from the cache. */
  closurePaths: StorePath[];
}

const NIX_CONF = "sandbox = false\nbuild-users-group =\nsubstituters =\n";
const READ_CONCURRENCY = 64;

/** Evaluates `ref` to derivations in `storeDir` and returns their DAG; throws one-line named errors. */
export async function instantiate(opts: InstantiateOptions): Promise<InstantiateResult> {
  const ref = parseRef(opts.ref);
  const cwd = opts.cwd ?? process.cwd();
  const confDir = await mkdtemp(join(tmpdir(), "farm-nix-conf-"));
  try {
    await writeFile(join(confDir, "nix.conf"), NIX_CONF);
    const nix = new NixRunner(opts, confDir, cwd);
    const args = await instantiateArgs(ref, opts.nixpkgs ?? DEFAULT_NIXPKGS, cwd);
    opts.logger.debug({ ref: ref.text, args }, "running nix-instantiate");
    const out = await nix.run("nix-instantiate", args, (stderr) => nixEvalError(stderr, refSourceLabel(ref), ref.attrPath));
    const roots = [...new Set(parseInstantiateOutput(out, opts.storeDir))];
    if (roots.length === 0) {
      throw new EvaluationError(`evaluation of ${ref.text} failed: it yields no derivations`);
    }
    const closure = await nix.run("nix-store", ["--query", "--requisites", ...roots], (stderr) =>
      new FarmError(`nix-store --query --requisites failed: ${stderr.trim().split("\n")[0]}`),
    );
    const closurePaths = closure.split("\n").filter((l) => l !== "");
    const drvPaths = closurePaths.filter((p) => p.endsWith(".drv"));
    const nodes = await mapLimited(drvPaths, READ_CONCURRENCY, async (p) => drvNodeFromText(p, await readFile(p, "utf8")));
    opts.logger.info({ ref: ref.text, roots: roots.length, drvs: nodes.length, paths: closurePaths.length }, "instantiated");
    return { roots, nodes, closurePaths };
  } finally {
    await rm(confDir, { recursive: true, force: true });
  }
}

async function instantiateArgs(ref: BuildRef, nixpkgs: string, cwd: string): Promise<string[]> {
  const attr = ref.attrPath === "" ? [] : ["-A", ref.attrPath];
  if (ref.kind === "nixpkgs") {
    const isUrl = /^[a-z][a-z0-9+.-]*:\/\//i.test(nixpkgs);
    const where = isUrl ? nixpkgs : resolve(cwd, nixpkgs);
    if (!isUrl) await mustExist(where, `nixpkgs not found: ${nixpkgs}`);
    // Empty config/overlays: the user's ~/.config/nixpkgs must not change what the farm builds.
    return ["-I", `nixpkgs=${where}`, "--expr", "import <nixpkgs> { config = {}; overlays = []; }", ...attr];
  }
  const file = resolve(cwd, ref.file);
  await mustExist(file, `file not found: ${ref.file}`);
  return [file, ...attr];
}

async function mustExist(path: string, message: string): Promise<void> {
  try {
    const s = await stat(path);
    if (s.isDirectory()) await stat(join(path, "default.nix"));
  } catch (cause) {
    throw new MissingFileError(message, { cause });
  }
}

/** Drv paths from nix-instantiate's stdout (`path` or `path!output` per line). */
export function parseInstantiateOutput(stdout: string, storeDir: string): DrvPath[] {
  const paths: DrvPath[] = [];
  for (const line of stdout.split("\n")) {
    if (line.trim() === "") continue;
    const path = line.split("!")[0];
    if (!path.startsWith(`${storeDir}/`) || !path.endsWith(".drv")) {
      throw new FarmError(`nix-instantiate printed '${line}', not a .drv in ${storeDir}: is the store dir configured right?`);
    }
    paths.push(path);
  }
  return paths;
}

class NixRunner {
  private readonly env: NodeJS.ProcessEnv;
  constructor(
    private readonly opts: InstantiateOptions,
    confDir: string,
    private readonly cwd: string,
  ) {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      NIX_STORE_DIR: opts.storeDir,
      NIX_STATE_DIR: opts.stateDir,
      NIX_LOG_DIR: opts.logDir,
      NIX_CONF_DIR: confDir,
      // Only our nix.conf counts, and no host channels or daemon leak in.
      NIX_USER_CONF_FILES: join(confDir, "nix.conf"),
      NIX_PATH: "",
    };
    delete env.NIX_REMOTE;
    this.env = env;
  }

  /**
   * Runs a Nix command; a non-zero exit becomes `onFail(stderr)`. Another Nix process
   * setting up the same fresh store at once (two submits side by side) makes Nix fail
   * with "database is busy", or on the gcroots link both made: that is tried again.
   */
  run(cmd: string, args: string[], onFail: (stderr: string) => Error): Promise<string> {
    const file = this.opts.nixBinDir ? join(this.opts.nixBinDir, cmd) : cmd;
    const once = () =>
      new Promise<string>((resolvePromise, reject) => {
        execFile(file, args, { env: this.env, cwd: this.cwd, maxBuffer: 1 << 28 }, (err, stdout, stderr) => {
          if (!err) return resolvePromise(stdout);
          if ((err as NodeJS.ErrnoException).code === "ENOENT") {
            return reject(new AbortError(new NixNotInstalledError(`${cmd} not found: install Nix 2.8 (nix-bin) and put it on PATH`, { cause: err })));
          }
          this.opts.logger.debug({ cmd, stderr }, "nix command failed");
          reject(STORE_SETUP_RACES.some((race) => race.test(stderr)) ? new NixBusyError(stderr) : new AbortError(onFail(stderr)));
        });
      });
    return pRetry(once, {
      retries: 5,
      minTimeout: 200,
      maxTimeout: 2000,
      onFailedAttempt: (e) => {
        if (e.retriesLeft > 0) this.opts.logger.warn({ cmd, attempt: e.attemptNumber }, "another Nix process is setting up or using the store; trying again");
      },
    }).catch((err: unknown) => {
      throw err instanceof NixBusyError ? onFail(err.stderr) : err;
    });
  }
}

/**
 * Nix 2.8's errors when another process sets up or holds the same store: the
 * database is busy (its error, not its warning while it waits by itself), or both
 * found no gcroots dir and made its `profiles` link, and the second failed.
 */
const STORE_SETUP_RACES = [/^error: .*SQLite database '[^']*' is busy/m, /^error: creating symlink from '[^']*\/gcroots\/profiles' to '[^']*': File exists/m];

/** A Nix call that failed only because another process set up or held the store. */
class NixBusyError extends Error {
  constructor(readonly stderr: string) {
    super("another Nix process is setting up or using the store");
  }
}

async function mapLimited<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}
