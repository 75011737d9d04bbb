// Output acceptance: a derivation counts as built only when every output is
// published. An output the reporting worker staged under this lease, with the
// NAR hash it reported, is signed and published now (OutputPublisher); one an
// accepted build published before stands. Anything else fails the check, and
// the scheduler treats the success as an upload failure.
import type { Logger } from "pino";
import type { OutputPublisher } from "../cache/staged-output.js";
import type { BuildReport, DrvNode } from "../core/types.js";

/** Publishes the outputs `workerId` staged for `report`'s lease; true when every output of `node` is published. */
export async function publishOutputs(publisher: OutputPublisher, node: DrvNode, jobs: string[], report: BuildReport, workerId: string, logger: Logger): Promise<boolean> {
  const reported = new Map(report.outputs.map((o) => [o.path, o.narHash]));
  for (const path of Object.values(node.outputs)) {
    const outcome = await publisher.publish(path, report.lease, workerId, reported.get(path), jobs).catch((err: unknown) => {
      logger.error({ err, path }, "publishing an output failed");
      return "missing" as const;
    });
    if (outcome === "missing") return false;
  }
  return true;
}
