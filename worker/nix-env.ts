// The environment stock Nix 2.8 runs in on a worker: relocated store, a nix.conf
// of our own (never the user's), the farm cache as the only substituter.
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";

/** Where the relocated Nix keeps things. */
export interface NixDirs {
  storeDir: string;
  stateDir: string;
  logDir: string;
}

/** What nix.conf says about the cache. */
export interface CacheSettings {
  cacheUrl: string;
  cachePublicKey: string;
}

/**
 * Nix asks its build hook about every build before running it locally, and its
 * own hook (`build-remote`, a start of the whole `nix` binary, about 20 ms a
 * build here) only says "decline-permanently" when no remote builders are set,
 * as on a worker. This says the same at once; Nix then stops asking and kills
 * it. It holds stdin open until then: Nix has written its settings there.
 */
export const DECLINING_BUILD_HOOK = ["#!/bin/sh", "# Written by the tmpnix farm worker: it never builds remotely.", "printf '# decline-permanently\\n' >&2", "while read -r _; do :; done", ""].join("\n");

/**
 * The nix.conf a worker runs with; with `buildUsersGroup` (a root worker) builds
 * run as that group's users, and `features` (what the worker offers the farm)
 * are added to Nix's own system features, or Nix would refuse those builds.
 * `buildHook` replaces Nix's own (see DECLINING_BUILD_HOOK).
 */
export function renderNixConf(cache: CacheSettings, buildUsersGroup = "", features: readonly string[] = [], buildHook?: string): string {
  return [
    "# Written by the tmpnix farm worker; rewritten on every build.",
    "sandbox = false",
    `build-users-group = ${buildUsersGroup}`,
    `substituters = ${cache.cacheUrl}`,
    `trusted-public-keys = ${cache.cachePublicKey}`,
    "require-sigs = true",
    "max-jobs = 1",
    "experimental-features = nix-command",
    // A path missing from the cache a minute ago may be there now: don't remember misses.
    "narinfo-cache-negative-ttl = 0",
    "connect-timeout = 15",
    "fallback = false",
    "keep-failed = false",
    ...(features.length ? [`extra-system-features = ${features.join(" ")}`] : []),
    // Nix splits this setting at white space, so a path with a space keeps Nix's own hook.
    ...(buildHook && !/\s/.test(buildHook) ? [`build-hook = ${buildHook}`] : []),
    "",
  ].join("\n");
}

/**
 * What of the worker's own environment Nix (and through it every build, which
 * can read its ancestors' /proc/PID/environ on a one-uid host) gets: the
 * basics a program needs, never the worker's token or other settings.
 */
export const PASSED_TO_NIX = ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "NIX_SSL_CERT_FILE", "SSL_CERT_FILE"] as const;

/** The environment Nix gets from `base`: only PASSED_TO_NIX and LC_* variables. */
export function scrubbedEnv(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined && ((PASSED_TO_NIX as readonly string[]).includes(k) || k.startsWith("LC_"))) out[k] = v;
  return out;
}

/** The Nix environment of one worker: dirs, config file, process env. */
export class NixEnv {
  /** NIX_CONF_DIR holding our nix.conf. */
  readonly confDir: string;
  /** Parent of the build sessions' TMPDIRs, so leftovers of killed builds can be removed. */
  readonly buildTmpRoot: string;
  private readonly cacheHome: string;

  constructor(
    readonly dirs: NixDirs,
    private readonly baseEnv: NodeJS.ProcessEnv = process.env,
    /** Group whose users Nix runs builds as (root workers only; "" = builds run as the worker's own uid). */
    private readonly buildUsersGroup = "",
    /** System features the worker offers (FARM_FEATURES). */
    private readonly features: readonly string[] = [],
  ) {
    const own = path.join(dirs.stateDir, "farm-worker");
    this.confDir = path.join(own, "conf");
    this.buildTmpRoot = path.join(own, "build-tmp");
    this.cacheHome = path.join(own, "xdg-cache");
  }

  /**
   * Writes nix.conf for this cache and the build hook it names (atomically;
   * unchanged content is left alone). True when it changed either.
   */
  configure(cache: CacheSettings): boolean {
    for (const d of [this.confDir, this.buildTmpRoot, this.cacheHome, this.dirs.storeDir, this.dirs.logDir]) mkdirSync(d, { recursive: true });
    const hook = path.join(this.confDir, "decline-build-hook");
    const hookChanged = writeIfChanged(hook, DECLINING_BUILD_HOOK, 0o755);
    return writeIfChanged(path.join(this.confDir, "nix.conf"), renderNixConf(cache, this.buildUsersGroup, this.features, hook)) || hookChanged;
  }

  /** Process environment for nix-* commands; `tmpDir` becomes the build's TMPDIR. */
  env(tmpDir?: string): NodeJS.ProcessEnv {
    // Nothing of the worker's configuration, no daemon, no one else's Nix settings.
    const env = scrubbedEnv(this.baseEnv);
    Object.assign(env, {
      NIX_STORE_DIR: this.dirs.storeDir,
      NIX_STATE_DIR: this.dirs.stateDir,
      NIX_LOG_DIR: this.dirs.logDir,
      NIX_CONF_DIR: this.confDir,
      NIX_USER_CONF_FILES: path.join(this.confDir, "nix.conf"),
      XDG_CACHE_HOME: this.cacheHome,
      HOME: env.HOME || this.cacheHome,
      USER: env.USER || "app",
    });
    if (tmpDir) env.TMPDIR = tmpDir;
    return env;
  }
}

/** Replaces `file` with `text` atomically unless it holds that already; true when it did. */
function writeIfChanged(file: string, text: string, mode = 0o644): boolean {
  let old: string | undefined;
  try {
    old = readFileSync(file, "utf8");
  } catch {
    // first build
  }
  if (old === text) return false;
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  chmodSync(tmp, mode);
  renameSync(tmp, file);
  return true;
}
