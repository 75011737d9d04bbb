import { afterEach, describe, expect, it } from "vitest";
import { mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AuthError, InvalidInputError } from "../core/errors.js";
import { mayPublishNames, parseTokens, parseTokensLenient, TokenRegistry } from "./auth.js";

const W1 = "worker-one-token-0123456789";
const W2 = "worker-two-token-0123456789";
const CLI = "cli-token-abcdefghijklmnop";
const ADMIN = "admin-token-abcdefghijklmnop";

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** Writes the tokens file atomically (as documented) and returns its path. */
function tokensFile(text: string, file?: string): string {
  dir ??= mkdtempSync(path.join(os.tmpdir(), "farm-auth-"));
  const f = file ?? path.join(dir, "tokens");
  writeFileSync(`${f}.new`, text);
  renameSync(`${f}.new`, f);
  return f;
}

const bearer = (t: string) => `Bearer ${t}`;

describe("parseTokens", () => {
  it("reads roles, names and tokens, with comments", () => {
    const t = parseTokens(`# fleet\nworker w1 ${W1}\n\ncli alice ${CLI}  # laptop\n`);
    expect(t.get(W1)).toEqual({ name: "w1", role: "worker" });
    expect(t.get(CLI)).toEqual({ name: "alice", role: "cli" });
  });

  it("rejects bad lines with their line number", () => {
    expect(() => parseTokens(`worker w1 ${W1}\nroot x ${W2}\n`, "f")).toThrow(/f:2: expected/);
    expect(() => parseTokens("worker w1 short", "f")).toThrow(InvalidInputError);
  });

  it("lets the operator say which submitters name what users install", () => {
    const t = parseTokens("cli alice tok-aaaaaaaaaaaaaaaa publish\ncli bob tok-bbbbbbbbbbbbbbbb\nadmin root tok-cccccccccccccccc\n");
    expect([...t.values()].map((p) => [p.name, mayPublishNames(p)])).toEqual([["alice", true], ["bob", false], ["root", true]]);
    expect(() => parseTokens("cli carol tok-dddddddddddddddd publish publish\n")).toThrow("after the token a cli line takes only 'publish'");
    expect(() => parseTokens("worker w tok-dddddddddddddddd publish\n")).toThrow(/a worker line takes/);
  });

  it("reads a worker's tier: untrusted only when it says so; only worker lines carry one", () => {
    const t = parseTokens("worker w1 tok-aaaaaaaaaaaaaaaa untrusted\nworker w2 tok-bbbbbbbbbbbbbbbb trusted\nworker w3 tok-cccccccccccccccc\n");
    expect([...t.values()]).toEqual([{ name: "w1", role: "worker", trusted: false }, { name: "w2", role: "worker" }, { name: "w3", role: "worker" }]);
    expect(() => parseTokens("cli alice tok-aaaaaaaaaaaaaaaa untrusted\n")).toThrow("tokens:1: after the token a cli line takes only 'publish', got 'untrusted'");
    expect(() => parseTokens("admin root tok-aaaaaaaaaaaaaaaa untrusted\n")).toThrow("tokens:1: only a worker line may say 'trusted', 'untrusted' or 'owner=' (a cli line: 'publish'), got 'untrusted'");
    expect(() => parseTokens("worker w1 tok-aaaaaaaaaaaaaaaa maybe\n")).toThrow(/got 'maybe'/);
    expect([...parseTokens("worker w4 tok-dddddddddddddddd untrusted owner=bob\n").values()]).toEqual([{ name: "w4", role: "worker", trusted: false, owner: "bob" }]);
    expect(() => parseTokens("worker w5 tok-eeeeeeeeeeeeeeee owner=\n")).toThrow(/owner=NAME/);
  });

  it("leniently keeps good lines and lists bad ones", () => {
    const { tokens, problems } = parseTokensLenient(`worker w1 ${W1}\nworker w2\nworker w3 tooshort\n`, "f");
    expect([...tokens.keys()]).toEqual([W1]);
    expect(problems).toEqual([expect.stringMatching(/^f:2:/), expect.stringMatching(/^f:3: token of 'w3'/)]);
  });
});

describe("TokenRegistry", () => {
  it("checks roles; admin may do anything; missing or forged tokens are refused", () => {
    const reg = new TokenRegistry(ADMIN, tokensFile(`worker w1 ${W1}\ncli alice ${CLI}\n`));
    expect(reg.authenticate(bearer(W1), ["worker"])).toEqual({ name: "w1", role: "worker" });
    expect(() => reg.authenticate(bearer(W1), ["cli"])).toThrow(/may not act as cli/);
    expect(reg.authenticate(bearer(ADMIN), ["worker"]).role).toBe("admin");
    expect(() => reg.authenticate(undefined, ["cli"])).toThrow(AuthError);
    expect(() => reg.authenticate(bearer("forged-token-forged-token"), ["cli"])).toThrow(/unknown or revoked/);
  });

  it("refuses to start with a bad tokens file", () => {
    expect(() => new TokenRegistry("", tokensFile("worker w1 short\n"))).toThrow(InvalidInputError);
  });

  it("revokes a removed line at the next call and tells listeners", async () => {
    const file = tokensFile(`worker w1 ${W1}\nworker w2 ${W2}\n`);
    const reg = new TokenRegistry("", file);
    const p = reg.authenticate(bearer(W1), ["worker"]);
    let changes = 0;
    reg.onChange(() => changes++);
    tokensFile(`worker w2 ${W2}\n`, file);
    expect(() => reg.recheck(bearer(W1), p, ["worker"])).toThrow(/revoked/);
    expect(reg.authenticate(bearer(W2), ["worker"]).name).toBe("w2");
    await new Promise((r) => setImmediate(r));
    expect(changes).toBe(1);
  });

  it("treats a token given to someone else as revoked for the old owner", () => {
    const file = tokensFile(`worker w1 ${W1}\n`);
    const reg = new TokenRegistry("", file);
    const p = reg.authenticate(bearer(W1), ["worker"]);
    tokensFile(`worker w9 ${W1}\n`, file);
    expect(() => reg.recheck(bearer(W1), p, ["worker"])).toThrow(/reassigned/);
  });

  it("keeps good lines and reports bad ones when an edit breaks the file", () => {
    const file = tokensFile(`worker w1 ${W1}\nworker w2 ${W2}\n`);
    const problems: string[] = [];
    const reg = new TokenRegistry("", file, { onProblem: (m) => problems.push(m) });
    tokensFile(`worker w1 ${W1}\nworker w2 oops\n`, file);
    expect(reg.authenticate(bearer(W1), ["worker"]).name).toBe("w1");
    expect(() => reg.authenticate(bearer(W2), ["worker"])).toThrow(AuthError);
    expect(problems).toEqual([expect.stringMatching(/:2: .*line ignored/)]);
  });

  it("revokes every file token when the file disappears, but not the admin token", () => {
    const file = tokensFile(`worker w1 ${W1}\n`);
    const problems: string[] = [];
    const reg = new TokenRegistry(ADMIN, file, { onProblem: (m) => problems.push(m) });
    unlinkSync(file);
    expect(() => reg.authenticate(bearer(W1), ["worker"])).toThrow(AuthError);
    expect(reg.authenticate(bearer(ADMIN), ["cli"]).role).toBe("admin");
    expect(problems[0]).toMatch(/is gone/);
  });

  it("notices a change by polling, without any call", async () => {
    const file = tokensFile(`worker w1 ${W1}\n`);
    const reg = new TokenRegistry("", file);
    const stop = reg.watch(20);
    const changed = new Promise<void>((resolve) => reg.onChange(resolve));
    tokensFile(`worker w2 ${W2}\n`, file);
    await changed;
    stop();
    expect(() => reg.authenticate(bearer(W1), ["worker"])).toThrow(AuthError);
  });
});
