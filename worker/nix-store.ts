// The worker's local relocated store (no daemon). Questions about paths and
// imports go to one long-lived `nix-store --serve --write` (nix-serve.ts), and
// builds to build sessions of the same kind (build-sessions.ts); a deletion and
// garbage collection are `nix-store` processes of their own.
import { lstatSync } from "node:fs";
import { execa } from "execa";
import { TransientError } from "../proto/errors.js";
import { encodeExport, type ExportItem } from "../proto/nix/mod.js";
import { BuildSessions } from "./build-sessions.js";
import type { NixEnv } from "./nix-env.js";
import { isNixNoise, LineSplitter, parseNixError } from "./nix-log.js";
import { NixServe, NixServeError, NixServeGoneError } from "./nix-serve.js";

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
   * nothing: only this worker changes its store; a path gone from disk is
   * invalid whatever we remember, and deleting or collecting garbage forgets.
   */
  private readonly knownValid = new Set<string>();
  private serve: Promise<NixServe> | null = null;
  /** Where builds run. */
  readonly builds: BuildSessions;

  constructor(private readonly nix: NixEnv) {
    this.builds = new BuildSessions(nix);
  }

  /** The serve session, started on first use and again after one ended; concurrent callers share one start. */
  private async session(): Promise<NixServe> {
    const current = this.serve;
    if (current) {
      const s = await current.catch(() => null);
      if (s?.alive) return s;
      if (this.serve !== current) return this.session(); // another caller has started the next one
    }
    this.serve = NixServe.start(this.nix.env());
    return this.serve;
  }

  /**
   * Asks the serve session; a question the session ended before sending (another
   * build's command failed, or a deletion closed it) goes to a new one. Whatever
   * went wrong, remembered validity is not to be leaned on after it.
   */
  private async ask<T>(question: (serve: NixServe) => Promise<T>): Promise<T> {
    try {
      return await question(await this.session()).catch(async (err: unknown) => {
        if (err instanceof NixServeGoneError) return question(await this.session());
        throw err;
      });
    } catch (err) {
      this.knownValid.clear();
      if (err instanceof NixServeError) throw new NixCommandError(err.command, err.nixError, undefined);
      throw err;
    }
  }

  /**
   * Ends the serve session and the idle build sessions (they hold what they
   * imported or built as temporary roots); the next question or build starts another.
   */
  async close(): Promise<void> {
    const serve = this.serve;
    this.serve = null;
    await Promise.all([(async () => (await serve?.catch(() => null))?.close())(), this.builds.closeIdle()]);
  }

  /**
   * Which of `paths` are not valid here. A path not on disk is not valid (Nix
   * registers a path only once it is there); known ones are valid; the rest are asked.
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
    if (ask.length === 0) return invalid;
    const valid = await this.ask((serve) => serve.validPaths(ask, signal));
    for (const p of ask) {
      if (valid.has(p)) this.knownValid.add(p);
      else invalid.add(p);
    }
    return invalid;
  }

  /** NAR hash, size and references of valid paths as registered in the local database; fails if one is not valid. */
  async pathInfos(paths: string[], signal?: AbortSignal): Promise<Map<string, LocalPathInfo>> {
    const infos = new Map<string, LocalPathInfo>();
    if (paths.length === 0) return infos;
    for (const info of await this.ask((serve) => serve.pathInfos(paths, signal))) {
      infos.set(info.path, info);
      this.knownValid.add(info.path);
    }
    const missing = paths.filter((p) => !infos.has(p));
    if (missing.length > 0) throw new NixCommandError("nix-store --serve query-path-infos", `path '${missing[0]}' is not valid`, undefined);
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
    if (paths.length === 0) return;
    await this.close(); // its temporary roots would keep what it imported alive
    await this.run(["--delete", ...paths], signal);
  }

  /** What keeps these paths alive (`nix-store -q --roots`: GC roots, temporary roots, processes using them). */
  async roots(paths: string[], signal?: AbortSignal): Promise<string[]> {
    if (paths.length === 0) return [];
    return (await this.run(["-q", "--roots", ...paths], signal)).split("\n").filter(Boolean);
  }

  /** Deletes every store path nothing roots (on a worker: inputs fetched for past builds, cheap to fetch again). */
  async collectGarbage(signal?: AbortSignal): Promise<void> {
    this.knownValid.clear();
    await this.close();
    await this.run(["--gc"], signal);
  }

  /** Imports these paths (dependencies first), as `nix-store --import` of their export stream would; returns them. */
  async import(items: AsyncIterable<ExportItem> | Iterable<ExportItem>, signal?: AbortSignal): Promise<string[]> {
    const imported: string[] = [];
    async function* noted(): AsyncGenerator<ExportItem> {
      for await (const item of items) {
        imported.push(item.storePath);
        yield item;
      }
    }
    await this.ask((serve) => serve.importPaths(encodeExport(noted()), signal));
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

function nixErrorOf(stderr: unknown, fallback: string | undefined): string {
  return parseNixError(String(stderr ?? "").split("\n")) ?? (fallback ?? "failed").split("\n")[0];
}
