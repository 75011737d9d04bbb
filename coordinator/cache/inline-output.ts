// Outputs a worker sent inside its build report instead of uploading them:
// small NARs, for which a request, an authorization and a body stream each cost
// more than the bytes (Bazel's remote execution inlines small outputs the same
// way). Each is staged exactly as an upload of it by that worker under the
// report's lease would be (processUpload with an output grant), so acceptance
// (staged-output.ts) treats both alike, and checks them alike.
import { asBuffer, baseName, hashPart } from "../../proto/nix/mod.js";
import type { BuiltOutput, Lease } from "../core/types.js";
import { processUpload, type HeldNar, type UploadContext } from "./upload.js";

/** Stages the inline outputs of build reports. */
export class InlineOutputStager {
  constructor(private readonly ctx: UploadContext) {}

  /**
   * Stages each inline output of `outputs` that `declared` names (the lease's derivation's outputs) under
   * `lease` and `workerId`. The caller has checked that the worker holds the lease. Never throws: an output
   * refused here (bytes that are not a NAR, or not the hash reported) is simply not staged, so the result's
   * check finds it missing and the build counts as an upload failure, as after a refused upload.
   *
   * A trusted worker's record is kept in memory only, and so is its NAR file: its result is judged at once, the
   * NAR is written when the output is published (beside its narinfo, not before the result's turn), and a
   * coordinator that restarts before acknowledging it gets the result, outputs and all, again. Returned by store
   * path, for the publisher. An untrusted worker's first build waits for a second one to confirm it, maybe across
   * restarts, so its NAR is written and its record journaled, like an upload's.
   */
  async stage(lease: Lease, workerId: string, outputs: readonly BuiltOutput[], declared: ReadonlySet<string>, trusted: boolean): Promise<Map<string, HeldNar>> {
    const { logger } = this.ctx;
    const grant = { kind: "output", by: workerId, workerId, lease } as const;
    const held = new Map<string, HeldNar>();
    await Promise.all(
      outputs.map(async (o) => {
        if (!o.inline) return;
        if (!declared.has(o.path)) {
          logger.warn({ storePath: o.path, worker: workerId, drv: lease.drvPath }, "inline output refused: not an output of the lease's derivation");
          return;
        }
        const claims = { storePath: o.path, hashPart: hashPart(o.path), references: o.inline.references, deriver: baseName(lease.drvPath), compression: "none" as const, narHash: o.narHash, narSize: o.narSize };
        try {
          const r = await processUpload(this.ctx, claims, asBuffer(o.inline.nar), grant, { stageInMemory: trusted });
          if (r.heldNar) held.set(o.path, r.heldNar);
        } catch (err) {
          logger.warn({ storePath: o.path, worker: workerId, drv: lease.drvPath, err: (err as Error).message }, "inline output refused");
        }
      }),
    );
    return held;
  }
}
