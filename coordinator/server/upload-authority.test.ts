// Who may upload what, for a batch (many content-addressed paths, no lease): it
// is decided once from the token, and only a submitter's or the admin's can hold one.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { AuthError } from "../core/errors.js";
import { TokenRegistry } from "./auth.js";
import { LeaseCredentials } from "./lease-credentials.js";
import { uploadAuthority } from "./upload-authority.js";

const ADMIN = "admin-token-abcdefghijklmnop";
const W1 = "worker-one-token-0123456789";
const CLI = "cli-token-abcdefghijklmnop";

describe("upload authority: a batch", () => {
  it("is content-addressed for a submitter, published for the admin, and nothing for a worker or a lease credential", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "farm-upload-authority-"));
    const file = path.join(dir, "tokens");
    writeFileSync(file, `worker w1 ${W1}\ncli alice ${CLI}\n`);
    const credentials = new LeaseCredentials(randomBytes(32));
    const decide = uploadAuthority(new TokenRegistry(ADMIN, file), () => ({ drv: () => undefined }), credentials, () => 0);
    try {
      expect(decide({ token: CLI })).toEqual({ kind: "content-addressed", by: "alice" });
      expect(decide({ token: ADMIN })).toMatchObject({ kind: "publish" });
      expect(() => decide({ token: W1 })).toThrow(new AuthError("worker 'w1' may upload only outputs of a lease it holds (X-Farm-Lease-Drv, X-Farm-Lease-Epoch)"));
      const credential = credentials.mint({ lease: { drvPath: "/tmp/nix/store/00000000000000000000000000000000-x.drv", epoch: 1 }, workerId: "w1", expiresAtMs: 1000 });
      expect(() => decide({ token: credential })).toThrow(new AuthError("a build's outputs are uploaded one at a time, under their lease"));
      expect(() => decide({ token: "no-such-token-0123456789" })).toThrow(AuthError);
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
