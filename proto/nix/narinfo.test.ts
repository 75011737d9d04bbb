import { describe, expect, it } from "vitest";
import { InvalidInputError } from "../errors.js";
import { formatNarInfo, normalizeSha256, parseNarInfo, referencePaths } from "./narinfo.js";

const SD = "/tmp/nix/store";
const A = "ya13ysp6mn5s1vkz1023zgghzvb2jlsb-foo";
const B = "0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-bar-1.0";
const NAR_HASH = "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";
const FILE_HASH = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";

// Field order and spelling as Nix 2.8's NarInfo::to_string writes them.
const TEXT = `StorePath: ${SD}/${A}
URL: nar/0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73.nar.zst
Compression: zstd
FileHash: ${FILE_HASH}
FileSize: 120
NarHash: ${NAR_HASH}
NarSize: 488
References: ${B} ${A}
Deriver: 2h9i448h1w70s30b184hh1q60l2060h1-foo.drv
Sig: cache-1:${"A".repeat(86)}==
Sig: other:${"B".repeat(86)}==
CA: fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s
`;

describe("narinfo", () => {
  it("parses every field", () => {
    const info = parseNarInfo(TEXT, SD);
    expect(info).toEqual({
      storePath: `${SD}/${A}`,
      url: "nar/0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73.nar.zst",
      compression: "zstd",
      fileHash: FILE_HASH,
      fileSize: 120,
      narHash: NAR_HASH,
      narSize: 488,
      references: [B, A],
      deriver: "2h9i448h1w70s30b184hh1q60l2060h1-foo.drv",
      sigs: [`cache-1:${"A".repeat(86)}==`, `other:${"B".repeat(86)}==`],
      ca: "fixed:r:sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
    });
    expect(referencePaths(info)).toEqual([`${SD}/${B}`, `${SD}/${A}`]);
  });

  it("formats like Nix (sorted references) and round-trips", () => {
    const info = parseNarInfo(TEXT, SD);
    expect(formatNarInfo(info)).toBe(TEXT);
    const unsorted = formatNarInfo({ ...info, references: [A, B] });
    expect(unsorted).toBe(TEXT);
    expect(parseNarInfo(unsorted, SD)).toEqual(info);
  });

  it("writes an empty References line and treats missing Compression as bzip2", () => {
    const minimal = `StorePath: ${SD}/${A}\nURL: nar/x.nar\nNarHash: ${NAR_HASH}\nNarSize: 8\nReferences: \n`;
    const info = parseNarInfo(minimal, SD);
    expect(info.compression).toBe("bzip2");
    expect(info.references).toEqual([]);
    expect(formatNarInfo({ ...info, compression: "none" })).toContain("References: \n");
  });

  it("normalises hex NarHash to nix32 and ignores unknown fields", () => {
    const hex = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    expect(normalizeSha256(hex)).toBe(NAR_HASH);
    const info = parseNarInfo(TEXT.replace(NAR_HASH, hex) + "Future: thing\n", SD);
    expect(info.narHash).toBe(NAR_HASH);
    // Nix32 is its own normal form, but only when valid: a bad character or excess bits are refused, not passed on.
    expect(normalizeSha256(NAR_HASH)).toBe(NAR_HASH);
    expect(() => normalizeSha256(`sha256:z${"0".repeat(51)}`)).toThrow(/not a valid sha256/);
    expect(() => normalizeSha256(`sha256:e${NAR_HASH.slice(8)}`)).toThrow(/not a valid sha256/);
  });

  it.each([
    ["missing StorePath", (t: string) => t.replace(/^StorePath.*\n/m, "")],
    ["missing NarHash", (t: string) => t.replace(/^NarHash.*\n/m, "")],
    ["missing URL", (t: string) => t.replace(/^URL.*\n/m, "")],
    ["zero NarSize", (t: string) => t.replace("NarSize: 488", "NarSize: 0")],
    ["negative size", (t: string) => t.replace("FileSize: 120", "FileSize: -1")],
    ["non-numeric size", (t: string) => t.replace("NarSize: 488", "NarSize: 4x")],
    ["md5 hash", (t: string) => t.replace(NAR_HASH, "md5:7zxvfwrfxak647frjm8hrj4480")],
    ["short hash", (t: string) => t.replace(NAR_HASH, NAR_HASH.slice(0, -1))],
    ["path in another store", (t: string) => t.replace(`StorePath: ${SD}`, "StorePath: /nix/store")],
    ["bad reference", (t: string) => t.replace(`References: ${B}`, "References: ../etc")],
    ["full-path reference", (t: string) => t.replace(`References: ${B}`, `References: ${SD}/${B}`)],
    ["bad deriver", (t: string) => t.replace("-foo.drv", "-foo")],
    ["duplicate field", (t: string) => t + "NarSize: 488\n"],
    ["line without colon-space", (t: string) => t + "garbage\n"],
    ["missing final newline", (t: string) => t.slice(0, -1)],
    ["empty line", (t: string) => t + "\n"],
    ["bad Sig", (t: string) => t + "Sig: nokey\n"],
    ["bad CA", (t: string) => t.replace("CA: fixed:", "CA: weird stuff ")],
  ])("rejects %s", (_label, mutate) => {
    expect(() => parseNarInfo(mutate(TEXT), SD)).toThrow(InvalidInputError);
  });
});
