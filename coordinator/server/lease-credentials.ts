// Lease-scoped upload credentials. Every assignment carries one: it lets its
// holder upload that lease's outputs and nothing else, until it expires, and
// the cache still checks that the lease is current. While a build runs the
// worker uploads with it instead of its long-lived token, so what a build might
// learn of its worker is worth one lease, which the build controls anyway.
// An HMAC over (drv, epoch, worker, expiry) under a key only the coordinator
// holds, kept beside the signing key so a restart doesn't void them.
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { Lease } from "../core/types.js";

const PREFIX = "lease.v1.";

/** What a credential grants. */
export interface LeaseGrant {
  lease: Lease;
  workerId: string;
  expiresAtMs: number;
}

const b64 = (b: Buffer | string) => Buffer.from(b).toString("base64url");

/** Mints and checks lease credentials with one key. */
export class LeaseCredentials {
  constructor(private readonly key: Buffer) {}

  /** Loads the key from `file`, or makes one (mode 0600). */
  static fromFile(file: string): LeaseCredentials {
    if (!existsSync(file)) {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, randomBytes(32).toString("hex") + "\n", { mode: 0o600 });
      chmodSync(file, 0o600);
    }
    return new LeaseCredentials(Buffer.from(readFileSync(file, "utf8").trim(), "hex"));
  }

  /** True for strings that are (or claim to be) lease credentials rather than tokens. */
  static looksLike(token: string): boolean {
    return token.startsWith(PREFIX);
  }

  mint(grant: LeaseGrant): string {
    const body = b64(JSON.stringify({ d: grant.lease.drvPath, e: grant.lease.epoch, w: grant.workerId, x: grant.expiresAtMs }));
    return `${PREFIX}${body}.${this.mac(body)}`;
  }

  /** What a credential grants, or undefined when it is forged, malformed or expired. */
  verify(credential: string, nowMs: number): LeaseGrant | undefined {
    if (!credential.startsWith(PREFIX)) return undefined;
    const [body, mac] = credential.slice(PREFIX.length).split(".");
    if (!body || !mac) return undefined;
    const want = Buffer.from(this.mac(body));
    const got = Buffer.from(mac);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
    try {
      const c = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as { d: string; e: number; w: string; x: number };
      if (typeof c.d !== "string" || !Number.isInteger(c.e) || typeof c.w !== "string" || typeof c.x !== "number" || c.x < nowMs) return undefined;
      return { lease: { drvPath: c.d, epoch: c.e }, workerId: c.w, expiresAtMs: c.x };
    } catch {
      return undefined;
    }
  }

  private mac(body: string): string {
    return createHmac("sha256", this.key).update(body).digest("base64url");
  }
}
