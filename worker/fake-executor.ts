// An executor for load tests on machines without Nix: it "builds" by sleeping
// for a modelled duration, then sends a tiny deterministic NAR per output (in
// its report, or uploaded) so the coordinator's "outputs verified in the cache"
// check stays real.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { encodeString, HashCounter } from "../proto/nix/mod.js";
import type { AssignmentSpec, BuildReport, BuiltOutput } from "../proto/types.js";
import type { CacheFactory } from "./cache-api.js";
import { failureReport, type Executor, type ExecutorContext } from "./executor.js";
import type { TransferCounters } from "./nix-executor.js";

/** Build durations in ms by derivation name; names not listed take `defaultMs`. */
export interface FakeModel {
  durations: Record<string, number>;
  defaultMs: number;
}

/** Reads a model file: a JSON object {name: ms}. */
export function loadFakeModel(file: string, defaultMs: number): FakeModel {
  if (!file) return { durations: {}, defaultMs };
  const parsed = JSON.parse(readFileSync(file, "utf8")) as unknown;
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || !Object.values(parsed).every((v) => typeof v === "number" && v >= 0)) {
    throw new Error(`fake model ${file}: expected a JSON object of name -> milliseconds`);
  }
  return { durations: parsed as Record<string, number>, defaultMs };
}

/** The NAR of a single regular file holding `contents` (what `nix-store --dump` gives for one). */
export function singleFileNar(contents: string | Uint8Array): Buffer {
  const body = typeof contents === "string" ? Buffer.from(contents) : Buffer.from(contents);
  return Buffer.concat([
    ...["nix-archive-1", "(", "type", "regular", "contents"].map((t) => encodeString(t)),
    encodeString(body),
    encodeString(")"),
  ]);
}

/** Sleeps, then sends (or uploads) a small NAR for each output. */
export class FakeExecutor implements Executor {
  /** `inline: false` uploads each output to the cache rather than sending it in the report. */
  constructor(private readonly opts: { model: FakeModel; makeCache: CacheFactory; logger: Logger; counters?: TransferCounters; inline?: boolean }) {}

  async run(a: AssignmentSpec, ctx: ExecutorContext): Promise<BuildReport> {
    const started = Date.now();
    const ms = this.opts.model.durations[a.name] ?? this.opts.model.defaultMs;
    ctx.onLog([`[fake] building ${a.name} for ${ms} ms with ${a.cores} cores`]);
    ctx.onUsage?.(1024 * 1024);
    try {
      await sleep(ms, undefined, { signal: ctx.signal });
    } catch {
      return failureReport(a, "aborted", `aborted: ${String(ctx.signal.reason ?? "requested")}`, started);
    }
    const nars = Object.values(a.outputs).map((storePath) => singleFileNar(`fake output ${storePath}\n`));
    ctx.onBuilt?.(nars.reduce((sum, nar) => sum + nar.length, 0));
    const outputs: BuiltOutput[] = [];
    for (const [i, [name, storePath]] of Object.entries(a.outputs).entries()) {
      // Content depends on the output path only: distinct fixed-output drvs can share an output path,
      // and like real fetches they must then upload identical NARs (the cache keeps the first).
      const nar = nars[i];
      const counter = new HashCounter();
      counter.update(nar);
      const { hash, size } = counter.result();
      const output: BuiltOutput = { name, path: storePath, narHash: hash, narSize: size };
      if (this.opts.inline !== false) {
        // Small, as real outputs up to INLINE_NAR_MAX_BYTES are: sent in the report, as the Nix executor does.
        outputs.push({ ...output, inline: { nar, references: [] } });
        continue;
      }
      try {
        const grant = ctx.grant?.() ?? a;
        await this.opts.makeCache(ctx).upload({ storePath, references: [], deriver: a.lease.drvPath, narStream: (async function* () { yield nar; })(), lease: grant.lease, token: grant.uploadCredential });
      } catch (err) {
        return failureReport(a, "upload-failed", `uploading ${storePath} failed: ${(err as Error).message}`, started);
      }
      this.opts.counters?.uploaded(nar.length);
      outputs.push(output);
    }
    ctx.onLog([`[fake] built ${a.name}`]);
    return { lease: a.lease, outcome: "succeeded", outputs, durationMs: Date.now() - started, peakMemoryBytes: 1024 * 1024, cores: a.cores, error: "" };
  }
}
