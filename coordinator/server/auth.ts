// Bearer tokens for workers, the CLI and admins. A tokens file can be edited
// while the coordinator runs: it is re-read when its mtime changes, so deleting
// a worker's line revokes that worker at its next call.
import { readFileSync, statSync } from "node:fs";
import { timingSafeEqual } from "node:crypto";
import { AuthError, InvalidInputError } from "../core/errors.js";

export type Role = "worker" | "cli" | "admin";

/** A token's owner. */
export interface Principal {
  name: string;
  role: Role;
}

/** Parses 'role name token' lines ('#' comments allowed). */
export function parseTokens(text: string, source = "tokens"): Map<string, Principal> {
  const tokens = new Map<string, Principal>();
  text.split("\n").forEach((line, i) => {
    const trimmed = line.replace(/#.*/, "").trim();
    if (!trimmed) return;
    const [role, name, token, extra] = trimmed.split(/\s+/);
    if (extra !== undefined || !token || !["worker", "cli", "admin"].includes(role)) {
      throw new InvalidInputError(`${source}:${i + 1}: expected 'worker|cli|admin NAME TOKEN'`);
    }
    if (token.length < 16) throw new InvalidInputError(`${source}:${i + 1}: token of '${name}' is shorter than 16 characters`);
    tokens.set(token, { name, role: role as Role });
  });
  return tokens;
}

/** Checks bearer tokens against the admin token and the tokens file. */
export class TokenRegistry {
  private fileTokens = new Map<string, Principal>();
  private fileMtimeMs = -1;

  constructor(private readonly adminToken: string, private readonly tokensFile: string) {
    this.reloadIfChanged();
  }

  /** Who owns this token, if it may act in one of `roles` (admin may do anything). */
  authenticate(header: string | undefined, roles: Role[]): Principal {
    const token = /^Bearer\s+(\S+)$/i.exec(header ?? "")?.[1];
    if (!token) throw new AuthError("missing bearer token");
    this.reloadIfChanged();
    const principal = this.lookup(token);
    if (!principal) throw new AuthError("unknown or revoked token");
    if (principal.role !== "admin" && !roles.includes(principal.role)) {
      throw new AuthError(`token of '${principal.name}' may not act as ${roles.join(" or ")}`);
    }
    return principal;
  }

  private lookup(token: string): Principal | undefined {
    if (this.adminToken && safeEqual(token, this.adminToken)) return { name: "admin", role: "admin" };
    return this.fileTokens.get(token);
  }

  private reloadIfChanged(): void {
    if (!this.tokensFile) return;
    const mtime = statSync(this.tokensFile).mtimeMs;
    if (mtime === this.fileMtimeMs) return;
    this.fileTokens = parseTokens(readFileSync(this.tokensFile, "utf8"), this.tokensFile);
    this.fileMtimeMs = mtime;
  }
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
