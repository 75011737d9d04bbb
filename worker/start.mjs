// `npm start`: runs the compiled worker and compiles nothing. `npm install` and
// `npm ci` compile it (the root package's `prepare` runs build:worker), so a
// small container never pays tsc's time and memory at start. A checkout whose
// sources are newer than dist/worker/main.js stops here with what to run,
// rather than running stale code. Plain JS: nothing to compile before it runs.
import { readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const main = path.join(root, "dist/worker/main.js");

/** The newest source worker/tsconfig.json compiles (worker/ and proto/, no tests). */
function newestSource(dir, best = { file: "", mtimeMs: 0 }) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== "testing" && e.name !== "node_modules") newestSource(p, best);
    } else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) {
      const { mtimeMs } = statSync(p);
      if (mtimeMs > best.mtimeMs) Object.assign(best, { file: p, mtimeMs });
    }
  }
  return best;
}

function stop(why) {
  process.stderr.write(`tmpnix-farm-worker: ${why}: run \`npm run build:worker\` in ${root} (npm install does it), then start again\n`);
  process.exit(1);
}

let builtMs = 0;
try {
  builtMs = statSync(main).mtimeMs;
} catch {
  stop("dist/worker/main.js is missing");
}
const newest = [path.join(root, "worker"), path.join(root, "proto")].reduce((b, d) => newestSource(d, b), { file: "", mtimeMs: 0 });
if (newest.mtimeMs > builtMs) stop(`${path.relative(root, newest.file)} is newer than dist/worker/main.js`);
await import(pathToFileURL(main).href);
