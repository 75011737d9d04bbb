import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import type { NarInfo } from "./narinfo.js";
import { fingerprint, generateKeyPair, parsePublicKey, parseSecretKey, publicKeyOf, signFingerprint, signNarInfo, verifyNarInfo } from "./signing.js";

// Made by Nix 2.8: `nix-store --generate-binary-cache-key farm-test-1 sec pub`.
const NIX_SECRET = "farm-test-1:7RBTyy+R1rO8Th11mq8rYilh7JkJKzBds1g887sKG7oQjtAwJl86yrNr89n7/YvrH50Mqx7GyDkSPnsFlYruHQ==";
const NIX_PUBLIC = "farm-test-1:EI7QMCZfOsqza/PZ+/2L6x+dDKsexsg5Ej57BZWK7h0=";

// RFC 8032 test 1 (empty message), wrapped in Nix's key format.
const RFC_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC_PUB = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const RFC_SIG = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

const SD = "/tmp/nix/store";
const A = "ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo";
const B = "0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-bar-1.0";
const INFO: NarInfo = {
  storePath: `${SD}/${A}`,
  url: "nar/x.nar.zst",
  compression: "zstd",
  narHash: "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic",
  narSize: 488,
  references: [A, B],
  sigs: [],
};

describe("signing", () => {
  it("derives the same public key as Nix from a Nix secret key", () => {
    expect(publicKeyOf(NIX_SECRET)).toBe(NIX_PUBLIC);
  });

  it("matches the RFC 8032 ed25519 vector", () => {
    const sk = `rfc:${Buffer.from(RFC_SEED + RFC_PUB, "hex").toString("base64")}`;
    expect(signFingerprint("", sk)).toBe(`rfc:${Buffer.from(RFC_SIG, "hex").toString("base64")}`);
  });

  it("builds Nix's fingerprint with sorted full reference paths", () => {
    expect(fingerprint(INFO.storePath, INFO.narHash, 488, [`${SD}/${A}`, `${SD}/${B}`])).toBe(
      `1;${SD}/${A};${INFO.narHash};488;${SD}/${B},${SD}/${A}`,
    );
    expect(fingerprint(INFO.storePath, INFO.narHash, 488, [])).toBe(`1;${SD}/${A};${INFO.narHash};488;`);
  });

  it("signs and verifies, and rejects any tampering", () => {
    const { secretKey, publicKey } = generateKeyPair("cache-1");
    const signed = signNarInfo(INFO, secretKey);
    expect(signed.sigs).toHaveLength(1);
    expect(verifyNarInfo(signed, [publicKey])).toBe(true);
    expect(verifyNarInfo(signed, [NIX_PUBLIC, publicKey])).toBe(true);
    expect(verifyNarInfo(INFO, [publicKey])).toBe(false);
    expect(verifyNarInfo(signed, [NIX_PUBLIC])).toBe(false);
    expect(verifyNarInfo({ ...signed, narSize: 489 }, [publicKey])).toBe(false);
    expect(verifyNarInfo({ ...signed, references: [A] }, [publicKey])).toBe(false);
    expect(verifyNarInfo({ ...signed, storePath: `${SD}/${B}` }, [publicKey])).toBe(false);
    // Same name, different key: a forged key name must not pass.
    const impostor = generateKeyPair("cache-1");
    expect(verifyNarInfo(signNarInfo(INFO, impostor.secretKey), [publicKey])).toBe(false);
    // Re-signing replaces the old signature by the same key name.
    expect(signNarInfo(signed, secretKey).sigs).toHaveLength(1);
  });

  it("rejects malformed keys", () => {
    expect(() => parseSecretKey("nokey")).toThrow(InvalidInputError);
    expect(() => parsePublicKey(":" + "A".repeat(43) + "=")).toThrow(InvalidInputError);
    expect(() => parsePublicKey(NIX_SECRET)).toThrow(InvalidInputError);
    expect(() => parseSecretKey(NIX_PUBLIC)).toThrow(InvalidInputError);
    expect(() => parsePublicKey("k:" + "A".repeat(42) + "!=")).toThrow(InvalidInputError);
    // Secret whose public half does not belong to its seed.
    const bad = Buffer.from(NIX_SECRET.split(":")[1], "base64");
    bad[40] ^= 1;
    expect(() => parseSecretKey(`k:${bad.toString("base64")}`)).toThrow(/public half/);
    expect(() => generateKeyPair("a:b")).toThrow(InvalidInputError);
  });
});
