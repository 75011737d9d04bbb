import { describe, expect, it } from "vitest";
import { fingerprint, generateKeyPair, parseSecretKey, signFingerprint, verifySignatures } from "../../proto/nix/signing.js";
import { FingerprintSigner } from "./fingerprint-signer.js";

describe("FingerprintSigner", () => {
  it("signs on its thread exactly as signFingerprint does, each fingerprint its own signature, many at once", async () => {
    const pair = generateKeyPair("farm-test-1");
    const key = parseSecretKey(pair.secretKey);
    const signer = new FingerprintSigner(key);
    const fps = Array.from({ length: 300 }, (_, i) => fingerprint(`/tmp/nix/store/${String(i).padStart(32, "a")}-p${i}`, `sha256:${"0".repeat(52)}`, 100 + i, []));
    const sigs = await Promise.all(fps.map((fp) => signer.sign(fp)));
    // Ed25519 is deterministic: the thread's signature is the one the main thread would have made.
    expect(sigs).toEqual(fps.map((fp) => signFingerprint(fp, key)));
    expect(sigs.every((sig, i) => verifySignatures(Buffer.from(fps[i]), [sig], [pair.publicKey]))).toBe(true);
    expect(verifySignatures(Buffer.from(fps[0]), [sigs[1]], [pair.publicKey])).toBe(false);
  });
});
