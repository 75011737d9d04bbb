// Thin wrappers over `nix-store` calls the worker makes (all local-store, no daemon).
import { lstatSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { execa } from "execa";
import { TransientError } from "../proto/errors.js";
import { nix32Encode } from "../proto/nix/mod.js";
import type { NixEnv } from "./nix-env.js";
import { isNixNoise, LineSplitter, parseNixError } from "./nix-log.js";

/** Paths per command line: about 400 KB of arguments, well under ARG_MAX (2 MB) even for long store paths. */
const ARGS_PER_CALL = 4000;

/** A nix-store call that failed; `nixError` is Nix's own one-line error. */
export class NixCommandError extends TransientError {
  constructor(readonly command: string, readonly nixError: string, readonly exitCode: number | undefined) {
    super(`${command}: ${nixError}`);
  }
}

/** The local relocated store. */
export class NixStore {
  /**
   * Paths Nix said are valid here (or that it imported), so asking again costs
   * no process: every nix-store process costs about 50 ms of startup. Only this
   * worker changes its store; a path gone from disk is invalid whatever we
   * remember, and deleting or collecting garbage forgets.
   */
  private readonly knownValid = new Set<string>();

  constructor(private readonly nix: NixEnv) {}

  /**
   * Which of `paths` are not valid here. A path not on disk is not valid (Nix
   * registers a path only once it is there); known ones are valid; the rest
   * are asked in ONE nix-store call per 4000 paths.
   */
  async invalidPaths(paths: string[], signal?: AbortSignal): Promise<Set<string>> {
    const invalid = new Set<string>();
    const ask: string[] = [];
    for (const p of paths) {
      if (lstatSync(p, { throwIfNoEntry: false }) === undefined) {
        invalid.add(p);
        this.knownValid.delete(p);
      } else if (!this.knownValid.has(p)) {
        ask.push(p);
      }
    }
    for (let i = 0; i < ask.length; i += ARGS_PER_CALL) {
      const chunk = ask.slice(i, i + ARGS_PER_CALL);
      const out = await this.run(["--check-validity", "--print-invalid", ...chunk], signal);
      const said = new Set(out.split("\n").filter(Boolean));
      for (const p of chunk) {
        if (said.has(p)) invalid.add(p);
        else this.knownValid.add(p);
      }
    }
    return invalid;
  }

  /**
   * NAR hash, size and references of valid paths as registered in the local
   * database, in ONE `nix-store --dump-db` call per 4000 paths (it fails if one is invalid).
   */
  async pathInfos(paths: string[], signal?: AbortSignal): Promise<Map<string, LocalPathInfo>> {
    const infos = new Map<string, LocalPathInfo>();
    for (let i = 0; i < paths.length; i += ARGS_PER_CALL) {
      for (const info of parseDumpDb(await this.run(["--dump-db", ...paths.slice(i, i + ARGS_PER_CALL)], signal))) {
        infos.set(info.path, info);
        this.knownValid.add(info.path);
      }
    }
    return infos;
  }

  /** `paths` and every valid path that refers to them, directly or not (what must go if they go). */
  async referrersClosure(paths: string[], signal?: AbortSignal): Promise<string[]> {
    if (paths.length === 0) return [];
    return (await this.run(["-q", "--referrers-closure", ...paths], signal)).split("\n").filter(Boolean);
  }

  /** Deletes these paths if nothing (no other path, no running build) still uses them. */
  async deletePaths(paths: string[], signal?: AbortSignal): Promise<void> {
    for (const p of paths) this.knownValid.delete(p);
    if (paths.length > 0) await this.run(["--delete", ...paths], signal);
  }

  /** What keeps these paths alive (`nix-store -q --roots`: GC roots, temporary roots, processes using them). */
  async roots(paths: string[], signal?: AbortSignal): Promise<string[]> {
    if (paths.length === 0) return [];
    return (await this.run(["-q", "--roots", ...paths], signal)).split("\n").filter(Boolean);
  }

  /** Deletes every store path nothing roots (on a worker: inputs fetched for past builds, cheap to fetch again). */
  async collectGarbage(signal?: AbortSignal): Promise<void> {
    this.knownValid.clear();
    await this.run(["--gc"], signal);
  }

  /** Feeds an export stream to `nix-store --import`; returns the imported paths. */
  async import(source: AsyncIterable<Uint8Array>, signal?: AbortSignal): Promise<string[]> {
    const child = execa("nix-store", ["--import"], { env: this.nix.env(), extendEnv: false, cancelSignal: signal, stdin: "pipe", reject: false });
    let feedError: unknown;
    const feed = pipeline(Readable.from(source, { objectMode: false }), child.stdin).catch((err) => {
      feedError = err;
      child.kill();
    });
    const [r] = await Promise.all([child, feed]);
    if (feedError) throw feedError;
    if (r.exitCode !== 0 || r.isCanceled) {
      this.knownValid.clear();
      throw new NixCommandError("nix-store --import", nixErrorOf(r.stderr, r.message), r.exitCode);
    }
    const imported = r.stdout.split("\n").filter(Boolean);
    for (const p of imported) this.knownValid.add(p);
    return imported;
  }

  /**
   * `nix-store -r` with extra options; streams its output lines to `onLine` and
   * resolves with the exit code and Nix's error (if any). Never throws for a
   * failed realisation.
   */
  async realise(paths: string[], opts: { extraArgs?: string[]; signal?: AbortSignal; onLine?: (line: string) => void } = {}): Promise<{ exitCode: number; error?: string; lines: string[] }> {
    const child = execa("nix-store", ["-r", ...paths, ...(opts.extraArgs ?? [])], { env: this.nix.env(), extendEnv: false, cancelSignal: opts.signal, buffer: false, reject: false, all: true });
    const lines: string[] = [];
    const splitter = new LineSplitter();
    const take = (l: string) => {
      if (isNixNoise(l)) return;
      if (lines.length < 10_000) lines.push(l);
      opts.onLine?.(l);
    };
    child.all?.on("data", (chunk: Buffer) => splitter.push(chunk).forEach(take));
    const r = await child;
    splitter.end().forEach(take);
    const exitCode = r.isCanceled ? -1 : (r.exitCode ?? -1);
    if (exitCode !== 0) this.knownValid.clear(); // it may have failed on an input we thought valid
    return { exitCode, error: exitCode === 0 ? undefined : (parseNixError(lines) ?? r.message), lines };
  }

  private async run(args: string[], signal?: AbortSignal): Promise<string> {
    const r = await execa("nix-store", args, { env: this.nix.env(), extendEnv: false, cancelSignal: signal, reject: false });
    // Whatever went wrong, remembered validity is not to be leaned on after it.
    if (r.exitCode !== 0 && !r.isCanceled) this.knownValid.clear();
    if (r.exitCode !== 0 || r.isCanceled) throw new NixCommandError(`nix-store ${args.slice(0, 2).join(" ")}`, nixErrorOf(r.stderr, r.message), r.exitCode);
    return r.stdout;
  }
}

/** What the local database holds about a valid path. */
export interface LocalPathInfo {
  path: string;
  /** sha256:<nix32>, as narinfos and the farm write it. */
  narHash: string;
  narSize: number;
  references: string[];
}

/**
 * Parses `nix-store --dump-db PATHS` (Nix 2.8's validity registration): per path
 * its path, base-16 NAR hash, NAR size, deriver (may be empty), reference count, references.
 */
export function parseDumpDb(text: string): LocalPathInfo[] {
  const lines = text.split("\n");
  const infos: LocalPathInfo[] = [];
  let i = 0;
  const next = (what: string): string => {
    if (i >= lines.length) throw new NixCommandError("nix-store --dump-db", `output ends before the ${what} of path ${infos.length + 1}`, 0);
    return lines[i++];
  };
  while (i < lines.length && lines[i] !== "") {
    const path = next("path");
    const hex = next("hash");
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new NixCommandError("nix-store --dump-db", `unexpected NAR hash '${hex}' of ${path}`, 0);
    const narSize = Number(next("size"));
    next("deriver");
    const count = Number(next("reference count"));
    if (!Number.isSafeInteger(narSize) || !Number.isSafeInteger(count)) throw new NixCommandError("nix-store --dump-db", `unexpected size or reference count of ${path}`, 0);
    const references: string[] = [];
    for (let r = 0; r < count; r++) {
      const ref = next("references");
      if (!ref) throw new NixCommandError("nix-store --dump-db", `output ends before the references of ${path}`, 0);
      references.push(ref);
    }
    infos.push({ path, narHash: `sha256:${nix32Encode(Buffer.from(hex, "hex"))}`, narSize, references });
  }
  return infos;
}

function nixErrorOf(stderr: unknown, fallback: string | undefined): string {
  return parseNixError(String(stderr ?? "").split("\n")) ?? (fallback ?? "failed").split("\n")[0];
}
