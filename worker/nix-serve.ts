// A long-lived `nix-store --serve --write`: the protocol Hydra's queue runner
// speaks to its build machines. Asking Nix which paths are valid, what it
// registered about them, importing paths, and building (build-sessions.ts)
// then costs a message, not a process start (20–50 ms each, more in a busy
// namespace). One command at a time; a session whose Nix failed or was
// interrupted is dropped, and the next command starts another.
//
// Nix holds every path this process imported or built as a temporary GC root
// while it lives, so deleting paths or collecting garbage must close the
// session first.
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { once } from "node:events";
import { ByteReader, encodeString, encodeU64, iteratorOf, type ByteSource } from "../proto/nix/mod.js";
import { LineSplitter, parseNixError, stripAnsi } from "./nix-log.js";

const SERVE_MAGIC_1 = 0x390c9deb;
const SERVE_MAGIC_2 = 0x5452eecb;
/** 2.5: path infos carry the NAR hash (minor >= 4). Nix 2.8 speaks 2.7. */
const CLIENT_VERSION = 0x205;
const CMD_QUERY_VALID_PATHS = 1;
const CMD_QUERY_PATH_INFOS = 2;
const CMD_IMPORT_PATHS = 4;
const CMD_BUILD_PATHS = 6;
const MAX_STRING = 1 << 20;
/** How long close() lets queued commands finish before it ends the session anyway. */
const CLOSE_WAIT_MS = 30_000;
/** Bytes of stderr kept for the error of a failed command. */
const STDERR_KEPT = 16 * 1024;

/** What Nix registered about a valid path. */
export interface ServedPathInfo {
  path: string;
  /** sha256:<nix32>, as narinfos write it. */
  narHash: string;
  narSize: number;
  references: string[];
}

/** The serve process failed a command (or died); `nixError` is Nix's own one-line error. */
export class NixServeError extends Error {
  constructor(readonly command: string, readonly nixError: string) {
    super(`${command}: ${nixError}`);
  }
}

/** The session had ended (another command failed, or it was closed) before this command was sent: another session can take it. */
export class NixServeGoneError extends NixServeError {
  constructor(command: string) {
    super(command, "the serve session had ended before the command was sent");
  }
}

/** How a session's Nix is started. */
export interface NixServeOptions {
  /** More of nix-store's options (before `--serve`), e.g. a builder's `--cores`. */
  args?: string[];
  /** In a process group of its own, so `kill()` reaches what it started in it. */
  detached?: boolean;
}

/** How a build asked of the session ended: Nix's exit status (0 = built) and its message. */
export interface ServedBuild {
  status: number;
  error?: string;
}

/** One `nix-store --serve --write` process and the commands it answers. */
export class NixServe {
  private readonly reader: ByteReader;
  private stderr = "";
  /** Where whole stderr lines go while a build runs (its log). */
  private lineSink?: (line: string) => void;
  private readonly lines = new LineSplitter();
  private readonly exited: Promise<void>;
  private dead = false;
  /** close() was called: no command is taken any more, the queued ones finish first. */
  private closing = false;
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(private readonly child: ChildProcessWithoutNullStreams, private readonly detached: boolean) {
    this.reader = new ByteReader(child.stdout, "nix-store --serve output");
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (s: string) => {
      this.stderr = (this.stderr + s).slice(-STDERR_KEPT);
      if (this.lineSink) this.lines.push(s).forEach(this.lineSink);
    });
    this.exited = new Promise((resolve) => child.once("close", () => resolve()));
    void this.exited.then(() => (this.dead = true));
    child.stdin.on("error", () => undefined); // a write after Nix died: the read that follows says why
  }

  /** Starts `nix-store --serve --write` with this environment and shakes hands. */
  static async start(env: NodeJS.ProcessEnv, opts: NixServeOptions = {}): Promise<NixServe> {
    // A long-lived Nix remembers what it looked up; a path it found invalid must not stay so once a build
    // (another process) has registered it, so it remembers no negative answers.
    const args = [...(opts.args ?? []), "--serve", "--write", "--option", "narinfo-cache-negative-ttl", "0"];
    const child = spawn("nix-store", args, { env, stdio: ["pipe", "pipe", "pipe"], detached: opts.detached ?? false });
    const spawned = await Promise.race([once(child, "spawn").then(() => null), once(child, "error").then(([err]) => err as Error)]);
    if (spawned) throw new NixServeError("nix-store --serve", spawned.message);
    const s = new NixServe(child, opts.detached ?? false);
    await s.command("nix-store --serve", async () => {
      await s.send(Buffer.concat([encodeU64(SERVE_MAGIC_1), encodeU64(CLIENT_VERSION)]));
      if ((await s.reader.readU64()) !== SERVE_MAGIC_2) throw new NixServeError("nix-store --serve", "did not answer the serve protocol's handshake");
      await s.reader.readU64(); // the server's version
    });
    return s;
  }

  /** False once the process is gone or closing. */
  get alive(): boolean {
    return !this.dead && !this.closing;
  }

  /** The Nix process's pid. */
  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** SIGKILLs Nix (and its process group, when detached); the command in flight fails. */
  kill(): void {
    this.closing = true;
    if (this.dead) return;
    try {
      process.kill(this.detached ? -this.pid : this.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }

  /**
   * Builds `drvPath` (every output), as `nix-store -r` would: its log lines go
   * to `onLine`, and a failed build is an answer, not an error. No time limits
   * are passed to Nix: the caller enforces its own and kills the session.
   */
  async buildPaths(drvPath: string, onLine: (line: string) => void): Promise<ServedBuild> {
    return this.command("nix-store --serve build-paths", async () => {
      this.lineSink = onLine;
      try {
        // max-silent-time, build-timeout, max-log-size, build-repeat, enforce-determinism: 0 = Nix's defaults.
        await this.send(Buffer.concat([encodeU64(CMD_BUILD_PATHS), ...pathSet([drvPath]), encodeU64(0), encodeU64(0), encodeU64(0), encodeU64(0), encodeU64(0)]));
        const status = await this.reader.readU64();
        const error = status === 0 ? undefined : stripAnsi(await this.readString()).trim();
        // Nix wrote the log to stderr before it answered on stdout: let that pipe's last lines in.
        await new Promise((r) => setImmediate(r));
        return { status, error };
      } finally {
        this.lines.end().forEach(onLine);
        this.lineSink = undefined;
      }
    });
  }

  /** The valid ones of `paths`. */
  async validPaths(paths: readonly string[], signal?: AbortSignal): Promise<Set<string>> {
    return this.command("nix-store --serve query-valid-paths", async () => {
      await this.send(Buffer.concat([encodeU64(CMD_QUERY_VALID_PATHS), encodeU64(0), encodeU64(0), ...pathSet(paths)]));
      const n = await this.reader.readU64();
      const valid = new Set<string>();
      for (let i = 0; i < n; i++) valid.add(await this.readString());
      return valid;
    }, signal);
  }

  /** What Nix registered about each of `paths` that is valid (an invalid one is left out). */
  async pathInfos(paths: readonly string[], signal?: AbortSignal): Promise<ServedPathInfo[]> {
    return this.command("nix-store --serve query-path-infos", async () => {
      await this.send(Buffer.concat([encodeU64(CMD_QUERY_PATH_INFOS), ...pathSet(paths)]));
      const infos: ServedPathInfo[] = [];
      for (;;) {
        const path = await this.readString();
        if (path === "") return infos;
        await this.readString(); // deriver
        const references: string[] = [];
        for (let n = await this.reader.readU64(); n > 0; n--) references.push(await this.readString());
        await this.reader.readU64(); // download size (the NAR size again)
        const narSize = await this.reader.readU64();
        const narHash = await this.readString();
        await this.readString(); // content address
        for (let n = await this.reader.readU64(); n > 0; n--) await this.readString(); // signatures
        infos.push({ path, narHash, narSize, references });
      }
    }, signal);
  }

  /** Imports an export stream (`nix-store --export` format), as `nix-store --import` would. */
  async importPaths(stream: ByteSource, signal?: AbortSignal): Promise<void> {
    return this.command("nix-store --serve import-paths", async () => {
      await this.send(encodeU64(CMD_IMPORT_PATHS));
      const it = iteratorOf(stream);
      let done = false;
      try {
        while (!done) {
          let next: IteratorResult<Uint8Array>;
          try {
            next = await it.next();
          } catch (err) {
            done = true; // a source that threw has ended
            throw new SourceFailed(err);
          }
          done = next.done === true;
          if (!done) await this.send(next.value);
        }
      } finally {
        // Whatever stopped us, let go of the source (a download's connection, a file).
        if (!done) await Promise.resolve(it.return?.()).catch(() => undefined);
      }
      if ((await this.reader.readU64()) !== 1) throw new NixServeError("nix-store --serve import-paths", "Nix did not confirm the import");
    }, signal);
  }

  /**
   * Ends the session once the commands queued so far have run: Nix exits when
   * its input ends (and lets go of its temporary roots).
   */
  async close(): Promise<void> {
    this.closing = true;
    let waited: NodeJS.Timeout | undefined;
    await Promise.race([this.tail, new Promise((r) => (waited = setTimeout(r, CLOSE_WAIT_MS)))]);
    clearTimeout(waited);
    if (!this.dead) this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Runs one exchange after those queued before it; on any failure the process is killed and the error names Nix's own complaint. */
  private command<T>(what: string, exchange: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.closing) return Promise.reject(new NixServeGoneError(what));
    const run = this.tail.then(() => this.exchange(what, exchange, signal));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async exchange<T>(what: string, exchange: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.dead) throw new NixServeGoneError(what);
    signal?.throwIfAborted();
    // An abort kills Nix, and ends the wait even where the exchange waits on its input.
    let onAbort = () => undefined as void;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => {
        this.child.kill("SIGKILL");
        reject(signal!.reason);
      };
    });
    aborted.catch(() => undefined);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await Promise.race([exchange(), aborted]);
    } catch (err) {
      this.child.kill("SIGKILL");
      await this.exited;
      if (signal?.aborted) throw signal.reason;
      if (err instanceof SourceFailed) throw err.cause; // what was to be imported failed (a download, a bad NAR), not Nix
      // Nix's own complaint, where it made one (a full disk, a bad NAR), says more than how we noticed it died.
      const nixError = parseNixError(this.stderr.split("\n"));
      if (nixError) throw new NixServeError(what, nixError);
      if (err instanceof NixServeError) throw err;
      throw new NixServeError(what, (err as Error).message);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private async send(bytes: Uint8Array): Promise<void> {
    if (this.dead) throw new NixServeError("nix-store --serve", "the serve process exited");
    if (!this.child.stdin.write(bytes)) await Promise.race([once(this.child.stdin, "drain"), this.exited]);
  }

  private async readString(): Promise<string> {
    return (await this.reader.readString(MAX_STRING)).toString("utf8");
  }
}

/** The bytes to import could not be read. */
class SourceFailed extends Error {
  constructor(cause: unknown) {
    super("the import's source failed", { cause });
  }
}

function pathSet(paths: readonly string[]): Buffer[] {
  return [encodeU64(paths.length), ...paths.map((p) => encodeString(p))];
}
