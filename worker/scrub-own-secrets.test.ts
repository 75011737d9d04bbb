import { execFileSync } from "node:child_process";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { argumentSpans, blockAddresses, environValueSpans } from "./scrub-own-secrets.js";

describe("finding secrets in the blocks /proc shows", () => {
  it("finds the values of the named variables only", () => {
    const block = Buffer.from("PATH=/bin\0FARM_TOKEN=abc=def\0FARM_TOKENX=no\0EMPTY=\0");
    expect(environValueSpans(block, ["FARM_TOKEN", "EMPTY"]).map((s) => block.subarray(s.start, s.end).toString())).toEqual(["abc=def", ""]);
  });

  it("finds a secret given on the command line, alone or after =", () => {
    const block = Buffer.from("node\0main.js\0--token=s3cr3t\0--x\0s3cr3t\0");
    expect(argumentSpans(block, "s3cr3t").map((s) => block.subarray(s.start, s.end).toString())).toEqual(["s3cr3t", "s3cr3t"]);
    expect(argumentSpans(block, "")).toEqual([]);
  });

  it("reads the block addresses after a command name that holds spaces and parentheses", () => {
    const rest = Array.from({ length: 50 }, (_, i) => String(i + 3)).join(" ");
    expect(blockAddresses(`123 (a b) c) ${rest}`)).toEqual({ argStart: 48, envStart: 50 });
  });
});

describe("scrubOwnSecrets (a real process)", () => {
  it("leaves the token readable neither in its /proc environ nor cmdline, as another process of the same uid sees them", () => {
    const script = `
      import { readFileSync } from "node:fs";
      import { scrubOwnSecrets } from ${JSON.stringify(path.join(import.meta.dirname, "..", "dist", "worker", "scrub-own-secrets.js"))};
      const secret = ["tok", "0123456789abcdef"].join("-"); // never written out whole in this script
      const n = scrubOwnSecrets(["FARM_TOKEN"], secret);
      const other = (f) => readFileSync(\`/proc/\${process.pid}/\${f}\`, "latin1");
      console.log(JSON.stringify({ n, environ: other("environ").includes(secret), cmdline: other("cmdline").includes(secret) }));`;
    const out = execFileSync(process.execPath, ["--input-type=module", "-e", script, "--", "--token=tok-0123456789abcdef"], { env: { PATH: process.env.PATH, FARM_TOKEN: "tok-0123456789abcdef" }, encoding: "utf8" });
    expect(JSON.parse(out)).toEqual({ n: 2, environ: false, cmdline: false });
  });
});
