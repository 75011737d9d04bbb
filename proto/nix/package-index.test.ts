import { describe, expect, it } from "vitest";
import { generateKeyPair, signNarInfo, verifyNarInfo } from "./signing.js";
import {
  currentEntry,
  emptyPackageIndex,
  MalformedIndexError,
  readPackageIndex,
  searchIndex,
  signPackageIndex,
  UntrustedIndexError,
  versionOfStorePath,
  withEntry,
  withoutName,
  type PackageEntry,
} from "./package-index.js";

const SD = "/tmp/nix/store";
const farm = generateKeyPair("farm-1");
const other = generateKeyPair("farm-1"); // same name, other key: names alone must not be trusted
const t0 = new Date("2026-12-01T00:00:00Z");
const hello = (hash: string, version: string): PackageEntry => ({
  name: "hello",
  version,
  outputs: { out: `${SD}/${hash}-hello-${version}` },
  source: "nixpkgs#hello (rev 0123abc)",
  builtAt: t0.toISOString(),
  jobId: "j1",
});
const H1 = "ya13ysp6mn5s1vkz1023zgghzvb2jlsb";
const H2 = "0mdqa9w1p6cmli6976v4wi0sw9r4p5pr";

describe("package index", () => {
  it("round-trips through its signed file and keeps older builds newest first", () => {
    let index = withEntry(emptyPackageIndex(SD, t0), hello(H1, "2.10"), t0);
    index = withEntry(index, hello(H2, "2.12"), t0);
    const read = readPackageIndex(signPackageIndex(index, farm.secretKey), [farm.publicKey], SD);
    expect(read.serial).toBe(2);
    expect(read.packages.hello.map((e) => e.version)).toEqual(["2.12", "2.10"]);
    expect(currentEntry(read, "hello")?.outputs.out).toBe(`${SD}/${H2}-hello-2.12`);
  });

  it("moves a rebuilt identical entry to the front instead of listing it twice, and caps history", () => {
    let index = emptyPackageIndex(SD, t0);
    for (const e of [hello(H1, "2.10"), hello(H2, "2.12"), hello(H1, "2.10")]) index = withEntry(index, e, t0);
    expect(index.packages.hello.map((e) => e.version)).toEqual(["2.10", "2.12"]);
    expect(withEntry(index, hello(H2, "2.12"), t0, 1).packages.hello).toHaveLength(1);
  });

  it("refuses an index signed by another key, even one with the trusted key's name", () => {
    const text = signPackageIndex(withEntry(emptyPackageIndex(SD, t0), hello(H1, "2.10"), t0), other.secretKey);
    expect(() => readPackageIndex(text, [farm.publicKey], SD)).toThrow(UntrustedIndexError);
  });

  it("refuses a tampered body", () => {
    const text = signPackageIndex(withEntry(emptyPackageIndex(SD, t0), hello(H1, "2.10"), t0), farm.secretKey);
    const tampered = text.replace(H1, H2);
    expect(tampered).not.toBe(text);
    expect(() => readPackageIndex(tampered, [farm.publicKey], SD)).toThrow(UntrustedIndexError);
  });

  it("refuses a signed entry that points outside the store dir", () => {
    const index = withEntry(emptyPackageIndex(SD, t0), hello(H1, "2.10"), t0);
    const evil = { ...index, packages: { hello: [{ ...hello(H1, "2.10"), outputs: { out: `/home/u/${H1}-hello` } }] } };
    const text = signPackageIndex(evil, farm.secretKey);
    expect(() => readPackageIndex(text, [farm.publicKey], SD)).toThrow(/not a store path in \/tmp\/nix\/store/);
    expect(() => readPackageIndex(text, [farm.publicKey], SD)).toThrow(MalformedIndexError);
    expect(() => withEntry(index, evil.packages.hello[0], t0)).toThrow(MalformedIndexError);
  });

  it("refuses an index for another store dir, and junk", () => {
    const text = signPackageIndex(emptyPackageIndex("/nix/store", t0), farm.secretKey);
    expect(() => readPackageIndex(text, [farm.publicKey], SD)).toThrow(/for store dir \/nix\/store/);
    expect(() => readPackageIndex("<html>", [farm.publicKey], SD)).toThrow(MalformedIndexError);
    expect(() => readPackageIndex("{}", [farm.publicKey], SD)).toThrow(MalformedIndexError);
  });

  it("keeps index and narinfo signatures apart", () => {
    // An index signature over a message shaped like a narinfo fingerprint must not verify as one.
    const info = { storePath: `${SD}/${H1}-hello-2.10`, url: "nar/x", compression: "none" as const, narHash: "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic", narSize: 1, references: [], sigs: [] };
    const signed = signNarInfo(info, farm.secretKey);
    expect(verifyNarInfo(signed, [farm.publicKey])).toBe(true);
    const indexSig = JSON.parse(signPackageIndex(emptyPackageIndex(SD, t0), farm.secretKey)).signatures[0];
    expect(verifyNarInfo({ ...info, sigs: [indexSig] }, [farm.publicKey])).toBe(false);
  });

  it("withdraws a name, searches, and reads versions as nix-env does", () => {
    const index = withEntry(emptyPackageIndex(SD, t0), hello(H1, "2.10"), t0);
    expect(searchIndex(index, "HEL").map((e) => e.name)).toEqual(["hello"]);
    expect(searchIndex(index, "0123abc")).toHaveLength(1);
    expect(searchIndex(index, "gcc")).toEqual([]);
    expect(withoutName(index, "gcc", t0)).toBe(false);
    const gone = withoutName(index, "hello", t0);
    expect(gone && gone.packages).toEqual({});
    expect(versionOfStorePath(`${SD}/${H1}-hello-2.10`, SD)).toBe("2.10");
    expect(versionOfStorePath(`${SD}/${H1}-nix-2.8.0`, SD)).toBe("2.8.0");
    expect(versionOfStorePath(`${SD}/${H1}-demo`, SD)).toBeUndefined();
  });
});
