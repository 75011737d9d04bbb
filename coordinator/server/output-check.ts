// Output acceptance: a derivation counts as built only when every output is
// published. An output the reporting worker staged under this lease, with the
// NAR hash it reported, is signed and published now (OutputPublisher); one an
// accepted build published before stands. Anything else fails the check, and
// the scheduler treats the success as an upload failure. The check reads
// memory only; the writes it starts are awaited before the verdict is stored.
//
// An untrusted worker's word is not enough: its build is signed only when a
// second build on another worker staged the same NAR hashes, or when it is a
// fixed-output derivation whose output matches the hash its .drv declares.
// Otherwise the scheduler is told to have it built again ("unconfirmed"), or,
// when two builds disagree, to have a trusted worker build it ("mismatch").
import type { Logger } from "pino";
import type { OutputPlan, OutputPublisher } from "../cache/staged-output.js";
import type { HeldNar } from "../cache/upload.js";
import type { TrustVerdict } from "../core/build-events.js";
import type { DrvRecord } from "../core/drv-state.js";
import type { BuildReport, DrvNode } from "../core/types.js";

/** A verdict on a build's outputs, and the writes that publish them when it is yes. */
export interface Publication {
  verified: boolean;
  /** Resolves once every output is in place (at once when there is nothing to write). */
  written: Promise<void>;
}

const NOTHING_WRITTEN: Publication = { verified: false, written: Promise.resolve() };

/**
 * Plans the outputs `workerId` staged for `report`'s lease and, when every output of `node` is
 * published or can be, starts publishing them: all or none, so no build's outputs are half signed.
 */
export async function publishOutputs(
  publisher: OutputPublisher,
  node: DrvNode,
  jobs: string[],
  report: BuildReport,
  workerId: string,
  logger: Logger,
  opts: { confirms?: string; held?: ReadonlyMap<string, HeldNar> } = {},
): Promise<Publication> {
  const { confirms, held } = opts;
  const reported = new Map(report.outputs.map((o) => [o.path, o.narHash]));
  const paths = Object.values(node.outputs);
  const siblings = new Set(paths.map((p) => p.slice(p.lastIndexOf("/") + 1)));
  const plans: OutputPlan[] = [];
  for (const path of paths) {
    const plan = await publisher.plan(path, report.lease, workerId, reported.get(path), jobs, { confirms, siblings, heldNar: held?.get(path) }).catch((err: unknown) => {
      logger.error({ err, path }, "checking an output failed");
      return { outcome: "missing" } as const;
    });
    if (plan.outcome === "missing") return NOTHING_WRITTEN;
    plans.push(plan);
  }
  return { verified: true, written: publisher.publish(plans) };
}

/** What the scheduler hears of a success: published, or not and why. */
export interface OutputDecision {
  verified: boolean;
  trust?: TrustVerdict;
  /** The publishing writes a yes started: the verdict's effects wait for them. */
  written?: Promise<void>;
}

/** Everything an acceptance looks at. */
export interface AcceptanceInput {
  publisher: OutputPublisher;
  node: DrvNode;
  record: DrvRecord;
  report: BuildReport;
  workerId: string;
  /** The reporting worker's tier (absent = trusted). */
  trusted?: boolean;
  /** NAR files its inline outputs left in memory, by store path: written when they are published. */
  heldNars?: ReadonlyMap<string, HeldNar>;
  /** Whether the output matches the hash a fixed-output .drv declares ("unknown": not a hash it can check); only asked for untrusted workers. */
  fixedOutputCheck?: () => Promise<"match" | "mismatch" | "unknown">;
  logger: Logger;
}

const hashesOf = (report: BuildReport) => Object.fromEntries(report.outputs.map((o) => [o.path, o.narHash]));
const sameHashes = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([p, h]) => b[p] === h);

/** Decides (and, where it may, publishes) a success: see the module comment. */
export async function acceptOutputs(a: AcceptanceInput): Promise<OutputDecision> {
  const { publisher, node, record, report, workerId, logger } = a;
  const jobs = record.jobs;
  const earlier = record.unconfirmed;
  if (a.trusted !== false) {
    const published = await publishOutputs(publisher, node, jobs, report, workerId, logger, { held: a.heldNars });
    if (published.verified && earlier && !sameHashes(earlier.narHashes, hashesOf(report))) {
      logger.warn({ drv: node.drvPath, worker: workerId, untrusted: earlier.workerId }, "a trusted build disagrees with an untrusted worker's earlier one; the trusted build is signed");
    }
    return published;
  }
  // Untrusted: first make sure what it reported is what it staged, so a verdict means something.
  for (const o of report.outputs) {
    const info = await publisher.staged(o.path, report.lease, workerId);
    if (!info || info.narHash !== o.narHash) return { verified: false };
  }
  if (Object.values(node.outputs).some((p) => !report.outputs.some((o) => o.path === p))) return { verified: false };
  // A fixed output is checked against the hash its .drv declares: an honest Nix never reports another.
  const fixed = node.fixedOutput && a.fixedOutputCheck ? await a.fixedOutputCheck() : "unknown";
  if (fixed === "match") return publishOutputs(publisher, node, jobs, report, workerId, logger);
  if (fixed === "mismatch") return { verified: false, trust: "mismatch" };
  if (!earlier || earlier.workerId === workerId) return { verified: false, trust: "unconfirmed" };
  if (!sameHashes(earlier.narHashes, hashesOf(report))) return { verified: false, trust: "mismatch" };
  return publishOutputs(publisher, node, jobs, report, workerId, logger, { confirms: earlier.workerId });
}
