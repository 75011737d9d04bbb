// Thin wrappers over `nix-store` calls the worker makes (all local-store, no daemon).
import { pipeline } from "node:stream/promises";
import { Readable } from "node:stream";
import { execa } from "execa";
import { TransientError } from "../proto/errors.js";
import type { NixEnv } from "./nix-env.js";
import { isNixNoise, LineSplitter, parseNixError } from "./nix-log.js";

/** Paths per command line; keeps us well under ARG_MAX for long store paths. */
const ARGS_PER_CALL = 1000;

/** A nix-store call that failed; `nixError` is Nix's own one-line error. */
export class NixCommandError extends TransientError {
  constructor(readonly command: string, readonly nixError: string, readonly exitCode: number | undefined) {
    super(`${command}: ${nixError}`);
  }
}

/** The local relocated store. */
export class NixStore {
  constructor(private readonly nix: NixEnv) {}

  /** Which of `paths` are not valid here, in ONE nix-store call per 1000 paths. */
  async invalidPaths(paths: string[], signal?: AbortSignal): Promise<Set<string>> {
    const invalid = new Set<string>();
    for (let i = 0; i < paths.length; i += ARGS_PER_CALL) {
      const out = await this.run(["--check-validity", "--print-invalid", ...paths.slice(i, i + ARGS_PER_CALL)], signal);
      for (const p of out.split("\n")) if (p) invalid.add(p);
    }
    return invalid;
  }

  /** Store paths `path` refers to. */
  async references(path: string, signal?: AbortSignal): Promise<string[]> {
    return (await this.run(["-q", "--references", path], signal)).split("\n").filter(Boolean);
  }

  /** NAR hash (sha256:<nix32>) and size as registered in the local database. */
  async narHashAndSize(path: string, signal?: AbortSignal): Promise<{ narHash: string; narSize: number }> {
    const narHash = (await this.run(["-q", "--hash", path], signal)).trim();
    const narSize = Number((await this.run(["-q", "--size", path], signal)).trim());
    return { narHash, narSize };
  }

  /** `paths` and every valid path that refers to them, directly or not (what must go if they go). */
  async referrersClosure(paths: string[], signal?: AbortSignal): Promise<string[]> {
    if (paths.length === 0) return [];
    return (await this.run(["-q", "--referrers-closure", ...paths], signal)).split("\n").filter(Boolean);
  }

  /** Deletes these paths if nothing (no other path, no running build) still uses them. */
  async deletePaths(paths: string[], signal?: AbortSignal): Promise<void> {
    if (paths.length > 0) await this.run(["--delete", ...paths], signal);
  }

  /** Deletes every store path nothing roots (on a worker: inputs fetched for past builds, cheap to fetch again). */
  async collectGarbage(signal?: AbortSignal): Promise<void> {
    await this.run(["--gc"], signal);
  }

  /** The NAR of a valid path, as `nix-store --dump` writes it; `done` rejects if the dump failed. */
  dump(path: string, signal?: AbortSignal): { nar: Readable; done: Promise<void> } {
    const child = execa("nix-store", ["--dump", path], { env: this.nix.env(), extendEnv: false, cancelSignal: signal, buffer: { stdout: false, stderr: true }, reject: false });
    const done = child.then((r) => {
      if (r.exitCode !== 0 || r.isCanceled) throw new NixCommandError(`nix-store --dump ${path}`, nixErrorOf(r.stderr, r.message), r.exitCode);
    });
    done.catch(() => {}); // observed by the caller; avoid an unhandled rejection when it isn't
    return { nar: child.stdout, done };
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
    if (r.exitCode !== 0 || r.isCanceled) throw new NixCommandError("nix-store --import", nixErrorOf(r.stderr, r.message), r.exitCode);
    return r.stdout.split("\n").filter(Boolean);
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
    return { exitCode, error: exitCode === 0 ? undefined : (parseNixError(lines) ?? r.message), lines };
  }

  private async run(args: string[], signal?: AbortSignal): Promise<string> {
    const r = await execa("nix-store", args, { env: this.nix.env(), extendEnv: false, cancelSignal: signal, reject: false });
    if (r.exitCode !== 0 || r.isCanceled) throw new NixCommandError(`nix-store ${args.slice(0, 2).join(" ")}`, nixErrorOf(r.stderr, r.message), r.exitCode);
    return r.stdout;
  }
}

function nixErrorOf(stderr: unknown, fallback: string | undefined): string {
  return parseNixError(String(stderr ?? "").split("\n")) ?? (fallback ?? "failed").split("\n")[0];
}
