// Strict parser for Nix .drv files (the ATerm `Derive(...)` form that Nix 2.8
// writes). Strict because a .drv we misread would be built wrongly on a worker:
// anything unexpected is rejected with the byte offset where it went wrong.

import { InvalidInputError } from "../errors.js";

/** One output of a derivation; hashAlgo/hash are non-empty only for fixed outputs. */
export interface AtermOutput {
  name: string;
  path: string;
  hashAlgo: string;
  hash: string;
}

/** One input derivation and the outputs of it that are used. */
export interface AtermInputDrv {
  path: string;
  outputs: string[];
}

/** The fields of a .drv file, exactly as written. */
export interface AtermDerivation {
  outputs: AtermOutput[];
  inputDrvs: AtermInputDrv[];
  inputSrcs: string[];
  system: string;
  builder: string;
  args: string[];
  /** Environment in file order; keys are unique. */
  env: Map<string, string>;
}

/** Parses the text of a .drv file; `source` names it in error messages. */
export function parseDerivation(text: string, source = "<drv>"): AtermDerivation {
  const p = new Scanner(text, source);
  p.literal("Derive(");
  const outputs = p.list(() => {
    p.literal("(");
    const name = p.string();
    p.literal(",");
    const path = p.string();
    p.literal(",");
    const hashAlgo = p.string();
    p.literal(",");
    const hash = p.string();
    p.literal(")");
    return { name, path, hashAlgo, hash };
  });
  p.literal(",");
  const inputDrvs = p.list(() => {
    p.literal("(");
    const path = p.string();
    p.literal(",");
    const outs = p.list(() => p.string());
    p.literal(")");
    return { path, outputs: outs };
  });
  p.literal(",");
  const inputSrcs = p.list(() => p.string());
  p.literal(",");
  const system = p.string();
  p.literal(",");
  const builder = p.string();
  p.literal(",");
  const args = p.list(() => p.string());
  p.literal(",");
  const envStart = p.pos;
  const pairs = p.list(() => {
    p.literal("(");
    const k = p.string();
    p.literal(",");
    const v = p.string();
    p.literal(")");
    return [k, v] as const;
  });
  p.literal(")");
  p.end();

  const env = new Map<string, string>();
  for (const [k, v] of pairs) {
    if (env.has(k)) p.fail(`duplicate env key "${k}"`, envStart);
    env.set(k, v);
  }
  if (outputs.length === 0) p.fail("derivation has no outputs", 0);
  return { outputs, inputDrvs, inputSrcs, system, builder, args, env };
}

class Scanner {
  pos = 0;
  constructor(
    private readonly text: string,
    private readonly source: string,
  ) {}

  fail(what: string, at = this.pos): never {
    throw new InvalidInputError(`malformed derivation ${this.source} at offset ${at}: ${what}`);
  }

  literal(s: string): void {
    if (!this.text.startsWith(s, this.pos)) {
      const found = this.pos >= this.text.length ? "end of input" : JSON.stringify(this.text.slice(this.pos, this.pos + 12));
      this.fail(`expected ${JSON.stringify(s)}, found ${found}`);
    }
    this.pos += s.length;
  }

  /** `[item,item,...]` */
  list<T>(item: () => T): T[] {
    this.literal("[");
    const out: T[] = [];
    if (this.text[this.pos] === "]") {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(item());
      const c = this.text[this.pos];
      if (c === ",") this.pos++;
      else if (c === "]") {
        this.pos++;
        return out;
      } else this.fail(`expected "," or "]" in list`);
    }
  }

  /** A double-quoted string with the escapes Nix writes: \" \\ \n \r \t. */
  string(): string {
    const start = this.pos;
    this.literal('"');
    const t = this.text;
    let out = "";
    let chunkStart = this.pos;
    for (;;) {
      // Scan plain characters in bulk: .drv files of big closures are large.
      let i = chunkStart;
      while (i < t.length && t[i] !== '"' && t[i] !== "\\") i++;
      if (i >= t.length) this.fail("unterminated string", start);
      out += t.slice(chunkStart, i);
      if (t[i] === '"') {
        this.pos = i + 1;
        return out;
      }
      const e = t[i + 1];
      if (e === '"' || e === "\\") out += e;
      else if (e === "n") out += "\n";
      else if (e === "r") out += "\r";
      else if (e === "t") out += "\t";
      else this.fail(`unknown string escape "\\${e ?? ""}"`, i);
      chunkStart = i + 2;
    }
  }

  end(): void {
    // Nix writes no trailing newline; tolerate one added by editors, nothing else.
    const rest = this.text.slice(this.pos);
    if (rest !== "" && rest !== "\n") this.fail("trailing characters after derivation");
  }
}
