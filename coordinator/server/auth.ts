// Bearer tokens for workers, the CLI and admins. A tokens file can be edited
// while the coordinator runs: it is re-read when it changes (checked on every
// call and by a poll timer), and listeners hear of every change, so deleting a
// worker's line cuts that worker's open stream too, not only its next call.
import { readFileSync, statSync } from "node:fs";
import { timingSafeEqual } from "node:crypto";
import { AuthError, InvalidInputError } from "../core/errors.js";

export type Role = "worker" | "cli" | "admin";

/** A token's owner. */
export interface Principal {
  name: string;
  role: Role;
  /** False for a worker token marked `untrusted`: its outputs need a second, agreeing build before they are signed. */
  trusted?: boolean;
  /** Who runs a worker (`owner=NAME`; default: the worker itself): an untrusted build is confirmed by another owner's where the fleet has one. */
  owner?: string;
  /** A submitter (`cli NAME TOKEN publish`) whose succeeded jobs go into the package index under their names. */
  publishes?: boolean;
}

/**
 * Whether jobs `caller` submits are published in the package index: the index
 * is what users install by name, so a submitter may not put a derivation of
 * its own under `hello` (or `nix`) unless the operator said so.
 */
export function mayPublishNames(caller: Principal): boolean {
  return caller.role === "admin" || caller.publishes === true;
}

/** Whether `viewer` may see and act on what `owner` submitted: its own, or anything for an admin. */
export function mayAccess(viewer: Principal, owner: string | undefined): boolean {
  return viewer.role === "admin" || (owner !== undefined && owner !== "" && owner === viewer.name);
}

/** One line of a tokens file, or why it is bad. */
function parseLine(line: string, where: string): { token: string; principal: Principal } | { problem: string } | null {
  const trimmed = line.replace(/#.*/, "").trim();
  if (!trimmed) return null;
  const [role, name, token, ...more] = trimmed.split(/\s+/);
  if (!token || !["worker", "cli", "admin"].includes(role)) return { problem: `${where}: expected 'worker|cli|admin NAME TOKEN' ('worker NAME TOKEN untrusted owner=WHO' for a worker the operator does not run)` };
  if (role === "cli" && more.length > 0) {
    if (more.length > 1 || more[0] !== "publish") return { problem: `${where}: after the token a cli line takes only 'publish', got '${more.join(" ")}'` };
    if (token.length < 16) return { problem: `${where}: token of '${name}' is shorter than 16 characters` };
    return { token, principal: { name, role: "cli", publishes: true } };
  }
  const tier = more.find((m) => m === "trusted" || m === "untrusted");
  const owner = more.find((m) => m.startsWith("owner="))?.slice("owner=".length);
  const unknown = more.filter((m) => m !== tier && !m.startsWith("owner="));
  if (more.length > 0 && role !== "worker") return { problem: `${where}: only a worker line may say 'trusted', 'untrusted' or 'owner=' (a cli line: 'publish'), got '${more.join(" ")}'` };
  if (unknown.length > 0 || more.length > 2 || owner === "") return { problem: `${where}: after the token a worker line takes 'trusted' or 'untrusted' and 'owner=NAME', got '${more.join(" ")}'` };
  if (token.length < 16) return { problem: `${where}: token of '${name}' is shorter than 16 characters` };
  return { token, principal: { name, role: role as Role, ...(tier === "untrusted" ? { trusted: false } : {}), ...(owner ? { owner } : {}) } };
}

/** Parses 'role name token' lines ('#' comments allowed); keeps the good lines and lists the bad ones. */
export function parseTokensLenient(text: string, source = "tokens"): { tokens: Map<string, Principal>; problems: string[] } {
  const tokens = new Map<string, Principal>();
  const problems: string[] = [];
  text.split("\n").forEach((line, i) => {
    const r = parseLine(line, `${source}:${i + 1}`);
    if (!r) return;
    if ("problem" in r) problems.push(r.problem);
    else tokens.set(r.token, r.principal);
  });
  return { tokens, problems };
}

/** Parses 'role name token' lines ('#' comments allowed); throws on the first bad line. */
export function parseTokens(text: string, source = "tokens"): Map<string, Principal> {
  const { tokens, problems } = parseTokensLenient(text, source);
  if (problems.length) throw new InvalidInputError(problems[0]);
  return tokens;
}

/** What changed about a file, cheaply: any edit or replacement changes one of these. */
function fileVersion(file: string): string | null {
  try {
    const st = statSync(file);
    return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/** Options of a TokenRegistry. */
export interface TokenRegistryOptions {
  /** Hears about bad lines or a vanished file found on a reload (the coordinator keeps running). */
  onProblem?: (message: string) => void;
}

/** Checks bearer tokens against the admin token and the tokens file. */
export class TokenRegistry {
  private fileTokens = new Map<string, Principal>();
  private fileVersion: string | null | undefined;
  private readonly listeners = new Set<() => void>();

  /** Reads the tokens file now; a bad file at startup is an error (fail loudly, not open). */
  constructor(private readonly adminToken: string, private readonly tokensFile: string, private readonly opts: TokenRegistryOptions = {}) {
    if (tokensFile) {
      this.fileVersion = fileVersion(tokensFile);
      this.fileTokens = parseTokens(readFileSync(tokensFile, "utf8"), tokensFile);
    }
  }

  /** Who owns this token, if it may act in one of `roles` (admin may do anything). */
  authenticate(header: string | undefined, roles: Role[]): Principal {
    const token = /^Bearer\s+(\S+)$/i.exec(header ?? "")?.[1];
    if (!token) throw new AuthError("missing bearer token");
    this.refresh();
    const principal = this.lookup(token);
    if (!principal) throw new AuthError("unknown or revoked token");
    if (principal.role !== "admin" && !roles.includes(principal.role)) {
      throw new AuthError(`token of '${principal.name}' may not act as ${roles.join(" or ")}`);
    }
    return principal;
  }

  /** Throws AuthError unless `header` still names `was` (a revoked or reassigned token fails). */
  recheck(header: string | undefined, was: Principal, roles: Role[]): void {
    const now = this.authenticate(header, roles);
    if (now.name !== was.name || now.role !== was.role || now.trusted !== was.trusted || now.owner !== was.owner) throw new AuthError(`token of '${was.name}' was reassigned`);
  }

  /** Calls `listener` (soon, not synchronously) after every change of the tokens file; returns an unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Re-reads the tokens file if it changed. A vanished file revokes every file token; bad lines are skipped and reported. */
  refresh(): void {
    if (!this.tokensFile) return;
    const version = fileVersion(this.tokensFile);
    if (version === this.fileVersion) return;
    this.fileVersion = version;
    if (version === null) {
      this.fileTokens = new Map();
      this.opts.onProblem?.(`${this.tokensFile} is gone: every token from it is revoked`);
    } else {
      const { tokens, problems } = parseTokensLenient(readFileSync(this.tokensFile, "utf8"), this.tokensFile);
      this.fileTokens = tokens;
      for (const p of problems) this.opts.onProblem?.(`${p} (line ignored)`);
    }
    // Deferred: a listener may close other streams, which must not happen inside this caller's handler.
    setImmediate(() => {
      for (const l of [...this.listeners]) l();
    });
  }

  /** Polls the tokens file so revocations reach streams that are quiet; returns a stop function. */
  watch(intervalMs: number): () => void {
    if (!this.tokensFile) return () => {};
    const timer = setInterval(() => {
      try {
        this.refresh();
      } catch (err) {
        this.opts.onProblem?.(`cannot read ${this.tokensFile}: ${(err as Error).message}`);
      }
    }, intervalMs);
    timer.unref();
    return () => clearInterval(timer);
  }

  private lookup(token: string): Principal | undefined {
    if (this.adminToken && safeEqual(token, this.adminToken)) return { name: "admin", role: "admin" };
    return this.fileTokens.get(token);
  }
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
