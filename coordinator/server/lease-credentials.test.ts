import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { LeaseCredentials } from "./lease-credentials.js";

const lease = { drvPath: "/tmp/nix/store/00000000000000000000000000000000-x.drv", epoch: 3 };

describe("lease credentials", () => {
  it("grant exactly what was minted, until they expire", () => {
    const c = new LeaseCredentials(randomBytes(32));
    const cred = c.mint({ lease, workerId: "w1", expiresAtMs: 1000 });
    expect(LeaseCredentials.looksLike(cred)).toBe(true);
    expect(c.verify(cred, 999)).toEqual({ lease, workerId: "w1", expiresAtMs: 1000 });
    expect(c.verify(cred, 1001)).toBeUndefined();
  });

  it("refuse anything altered, or minted with another key", () => {
    const c = new LeaseCredentials(randomBytes(32));
    const cred = c.mint({ lease, workerId: "w1", expiresAtMs: 1000 });
    const [prefix, body, mac] = [cred.slice(0, 9), ...cred.slice(9).split(".")];
    const otherBody = Buffer.from(JSON.stringify({ d: lease.drvPath, e: 3, w: "w2", x: 1000 })).toString("base64url");
    expect(c.verify(`${prefix}${otherBody}.${mac}`, 0)).toBeUndefined();
    expect(c.verify(`${prefix}${body}.${mac.slice(1)}x`, 0)).toBeUndefined();
    expect(new LeaseCredentials(randomBytes(32)).verify(cred, 0)).toBeUndefined();
    expect(c.verify("lease.v1.garbage", 0)).toBeUndefined();
    expect(c.verify("test-token-abc", 0)).toBeUndefined();
  });
});
