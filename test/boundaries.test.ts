// The layout's one hard rule: proto/ is the only code the worker and the
// coordinator share. worker/ never imports coordinator/, coordinator/ never
// imports worker/, and proto/ imports neither. Tests may reach both sides only
// through test/ (e.g. test/fixtures/cache-server.ts); the code that ships must
// not reach the other side at all, not even through a chain of imports.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** Top-level directories each area may not import from. */
const FORBIDDEN: Record<string, string[]> = {
  worker: ["coordinator"],
  coordinator: ["worker"],
  proto: ["coordinator", "worker"],
};

const SOURCE = /\.(ts|mts|js|mjs)$/;
/** Files the builds leave out (tsconfig.json's exclude list): tests and their helpers. */
const TEST_ONLY = /\.test\.ts$|(^|\/)testing\/|(^|\/)test-support\.ts$|(^|\/)store-conformance\.ts$/;

/** Every relative import specifier in a source file: static, re-export, side-effect and dynamic. */
function importSpecifiers(source: string): string[] {
  // Commented-out imports don't count (comments that start a line; enough for this tree).
  const code = source.replace(/^\s*\/\*[\s\S]*?\*\//gm, "").replace(/^\s*\/\/.*$/gm, "");
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\b[^"'`;]*?\bfrom\s*["']([^"']+)["']/g,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) found.push(m[1]);
  return found.filter((s) => s.startsWith("."));
}

/** Repo-relative path of the file `spec` names from `from` (`.js` specifiers name `.ts` sources). */
function resolve(from: string, spec: string, files: ReadonlyMap<string, string>): string {
  const p = path.posix.normalize(path.posix.join(path.posix.dirname(from), spec));
  const ts = p.replace(/\.js$/, ".ts").replace(/\.mjs$/, ".mts");
  return files.has(ts) ? ts : p;
}

const area = (file: string) => file.split("/")[0];

/**
 * Every broken boundary in `files` (repo-relative path -> source): each file that
 * imports a forbidden area directly, and each shipped (non-test) file of worker/
 * or proto/ from which a chain of imports leads into a forbidden area.
 */
function boundaryViolations(files: ReadonlyMap<string, string>): string[] {
  const edges = new Map<string, { spec: string; target: string }[]>();
  for (const [file, source] of files) edges.set(file, importSpecifiers(source).map((spec) => ({ spec, target: resolve(file, spec, files) })));

  const problems: string[] = [];
  for (const [file, imports] of edges) {
    const forbidden = FORBIDDEN[area(file)] ?? [];
    for (const { spec, target } of imports) {
      if (forbidden.includes(area(target))) problems.push(`${file} imports "${spec}" (${target}): ${area(file)}/ may not import ${area(target)}/`);
    }
  }
  for (const [file] of edges) {
    const forbidden = FORBIDDEN[area(file)] ?? [];
    if (TEST_ONLY.test(file)) continue;
    // Breadth-first over imports, remembering how each file was reached.
    const via = new Map<string, string>([[file, ""]]);
    const queue = [file];
    while (queue.length) {
      const at = queue.shift()!;
      for (const { target } of edges.get(at) ?? []) {
        if (via.has(target)) continue;
        via.set(target, at);
        if (forbidden.includes(area(target))) {
          // A hop that is itself a forbidden import was reported above; report only chains through other areas (test/).
          if ((FORBIDDEN[area(at)] ?? []).includes(area(target))) continue;
          const chain = [target];
          for (let f = at; f; f = via.get(f)!) chain.unshift(f);
          problems.push(`${file} reaches ${area(target)}/ through ${chain.join(" -> ")}`);
          queue.length = 0;
          break;
        }
        if (edges.has(target)) queue.push(target);
      }
    }
  }
  return problems;
}

function readSources(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(path.join(repo, dir), { withFileTypes: true })) {
      const rel = `${dir}/${e.name}`;
      if (e.isDirectory()) {
        if (e.name !== "node_modules" && e.name !== "dist") walk(rel);
      } else if (SOURCE.test(e.name)) files.set(rel, readFileSync(path.join(repo, rel), "utf8"));
    }
  };
  for (const top of ["proto", "coordinator", "worker", "test"]) walk(top);
  return files;
}

describe("module boundaries", () => {
  it("worker/ and coordinator/ share only proto/, which imports neither", () => {
    const files = readSources();
    expect(files.size).toBeGreaterThan(100);
    expect(boundaryViolations(files)).toEqual([]);
  });

  it("names the file and the import that cross a boundary, directly or through a chain", () => {
    const files = new Map([
      ["worker/a.ts", 'import { x } from "../coordinator/core/types.js";\n'],
      ["worker/b.ts", 'import {\n  y,\n} from "../proto/mod.js";\n'],
      ["proto/mod.ts", 'export { y } from "./y.js";\nconst z = await import("../worker/z.js");\n'],
      ["proto/y.ts", 'import "../coordinator/side-effect.js";\nexport const y = 1;\n'],
      ["coordinator/c.ts", '// import { w } from "../worker/w.js";\nimport type { W } from "../worker/w.js";\n'],
      ["coordinator/core/types.ts", "export const x = 1;\n"],
      ["worker/c.ts", 'import { startTestCache } from "../test/fixtures/cache-server.js";\n'],
      ["worker/c.test.ts", 'import { startTestCache } from "../test/fixtures/cache-server.js";\n'],
      ["test/fixtures/cache-server.ts", 'import { createCacheServer } from "../../coordinator/cache/http-server.js";\n'],
    ]);
    expect(boundaryViolations(files).sort()).toEqual([
      'coordinator/c.ts imports "../worker/w.js" (worker/w.js): coordinator/ may not import worker/',
      'proto/mod.ts imports "../worker/z.js" (worker/z.js): proto/ may not import worker/',
      'proto/y.ts imports "../coordinator/side-effect.js" (coordinator/side-effect.js): proto/ may not import coordinator/',
      "worker/a.ts imports \"../coordinator/core/types.js\" (coordinator/core/types.ts): worker/ may not import coordinator/",
      "worker/c.ts reaches coordinator/ through worker/c.ts -> test/fixtures/cache-server.ts -> coordinator/cache/http-server.js",
    ]);
  });
});
