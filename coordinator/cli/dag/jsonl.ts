// Loader for the real nixpkgs DAG dumps (one JSON object per derivation, see
// the nodes.jsonl schema: drv, name, outputs, input_drvs, ...). Streams the
// file line by line so 50k-node dumps don't need one giant string.

import { spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { FarmError, InvalidInputError } from "../../core/errors.js";
import type { DrvNode, DrvPath } from "../../core/types.js";
import { parseDrvName } from "../../../proto/nix/mod.js";

/** Reads a `.jsonl` or `.jsonl.xz` DAG dump into DrvNodes (inputSrcs stay empty: the dump only counts them). */
export async function loadJsonlDag(file: string): Promise<DrvNode[]> {
  const { stream, done, abort } = openMaybeXz(file);
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  const nodes: DrvNode[] = [];
  let lineNo = 0;
  try {
    for await (const line of lines) {
      lineNo++;
      if (line.trim() === "") continue;
      nodes.push(parseJsonlNode(line, `${file}:${lineNo}`));
    }
  } catch (err) {
    abort();
    if (err instanceof FarmError) throw err;
    throw new InvalidInputError(`cannot read DAG file ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    lines.close();
  }
  await done;
  return nodes;
}

function openMaybeXz(file: string): { stream: Readable; done: Promise<void>; abort: () => void } {
  if (!file.endsWith(".xz")) {
    const stream = createReadStream(file);
    const done = new Promise<void>((res, rej) => {
      stream.on("close", () => res());
      stream.on("error", (cause) => rej(new InvalidInputError(`cannot read DAG file ${file}`, { cause })));
    });
    done.catch(() => undefined);
    return { stream, done, abort: () => stream.destroy() };
  }
  const xz = spawn("xz", ["-dc", "--", file], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  xz.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<void>((res, rej) => {
    xz.on("error", (cause) => rej(new InvalidInputError(`cannot run xz to read ${file}`, { cause })));
    xz.on("close", (code) => (code === 0 ? res() : rej(new InvalidInputError(`xz -dc ${file} failed: ${stderr.trim()}`))));
  });
  // Surface spawn errors through `done` only; avoid an unhandled rejection while lines stream.
  done.catch(() => undefined);
  return { stream: xz.stdout, done, abort: () => xz.kill() };
}

/** Parses one line of the dump; `where` (file:line) names it in errors. */
export function parseJsonlNode(line: string, where = "<line>"): DrvNode {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch (cause) {
    throw new InvalidInputError(`${where}: not JSON`, { cause });
  }
  const bad = (field: string, want: string): never => {
    throw new InvalidInputError(`${where}: field ${field} is not ${want}`);
  };
  const str = (k: string): string => (typeof o[k] === "string" ? (o[k] as string) : bad(k, "a string"));
  const optStr = (k: string): string | undefined => (o[k] === undefined || o[k] === null ? undefined : str(k));
  const bool = (k: string, dflt: boolean): boolean =>
    o[k] === undefined ? dflt : typeof o[k] === "boolean" ? (o[k] as boolean) : bad(k, "a boolean");
  const strMap = (k: string): Record<string, string> => {
    const v = o[k];
    if (typeof v !== "object" || v === null || Array.isArray(v)) return bad(k, "an object");
    for (const x of Object.values(v)) if (typeof x !== "string") bad(k, "an object of strings");
    return v as Record<string, string>;
  };
  const strList = (k: string, v: unknown = o[k]): string[] =>
    Array.isArray(v) && v.every((s) => typeof s === "string") ? v : bad(k, "a list of strings");

  const inputs = o.input_drvs;
  if (typeof inputs !== "object" || inputs === null || Array.isArray(inputs)) bad("input_drvs", "an object");
  const name = str("name");
  const split = parseDrvName(name);
  return {
    drvPath: str("drv"),
    name,
    pname: optStr("pname") ?? split.pname,
    version: optStr("version") ?? split.version,
    system: str("system"),
    outputs: strMap("outputs"),
    inputDrvs: Object.entries(inputs as Record<string, unknown>).map(([drvPath, outs]) => ({
      drvPath,
      outputs: strList("input_drvs", outs),
    })),
    inputSrcs: [],
    fixedOutput: bool("fixed_output", false),
    requiredSystemFeatures: o.required_system_features === undefined ? [] : strList("required_system_features"),
    preferLocalBuild: bool("prefer_local_build", false),
    allowSubstitutes: bool("allow_substitutes", true),
    enableParallelBuilding: bool("enable_parallel_building", false),
  };
}

/** The nodes reachable from `roots` through inputDrvs (depth-first order); throws if a root or input is missing. */
export function cutClosure(nodes: readonly DrvNode[], roots: readonly DrvPath[]): DrvNode[] {
  const byPath = new Map<DrvPath, DrvNode>();
  for (const n of nodes) byPath.set(n.drvPath, n);
  const seen = new Set<DrvPath>();
  const out: DrvNode[] = [];
  const stack: { path: DrvPath; from: string }[] = roots.map((path) => ({ path, from: "roots" }));
  while (stack.length > 0) {
    const { path, from } = stack.pop()!;
    if (seen.has(path)) continue;
    const node = byPath.get(path);
    if (!node) throw new InvalidInputError(`DAG is not closed: ${path} (needed by ${from}) is missing`);
    seen.add(path);
    out.push(node);
    for (const i of node.inputDrvs) if (!seen.has(i.drvPath)) stack.push({ path: i.drvPath, from: path });
  }
  return out;
}
