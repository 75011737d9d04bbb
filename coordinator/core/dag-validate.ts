// Validation of a submitted DAG. Everything is checked before anything
// changes, and the first problem is reported with the node it concerns.
import { InvalidInputError } from "./errors.js";
import { topoOrderSteps } from "./job-graph.js";
import { runAll, SliceBudget, type Steps } from "./steps.js";
import type { DrvNode, DrvPath } from "./types.js";

/** A job submission as the scheduler receives it. */
export interface Submission {
  jobId: string;
  description: string;
  roots: DrvPath[];
  nodes: DrvNode[];
  /** Same key from the same owner => same job; "" means none. */
  idempotencyKey: string;
  /** Name of the submitting token ("" for the simulator and tests). */
  owner?: string;
  /** Where a success is published in the package index (absent: not published). */
  publish?: { name: string; source: string };
  /** Drvs whose outputs are already all in the cache. */
  cachedDrvPaths: ReadonlySet<DrvPath>;
}

/** A validated submission: nodes by path, in topological order (inputs first). */
export interface ValidDag {
  nodes: Map<DrvPath, DrvNode>;
  order: DrvPath[];
}

/** Job ids double as store keys: keep them to a safe alphabet. */
export const JOB_ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

// <32 nix-base32 chars>-<name>.drv; nix base32 omits e, o, t, u.
const DRV_BASENAME_PATTERN = /^[0-9a-df-np-sv-z]{32}-[^/]+\.drv$/;

/** The 32-char hash part of an absolute .drv store path (its store key), or null when malformed. */
export function drvHashPart(drvPath: DrvPath): string | null {
  if (typeof drvPath !== "string" || !drvPath.startsWith("/")) return null;
  const slash = drvPath.lastIndexOf("/");
  if (slash < 1) return null; // the store dir must not be the root itself
  const base = drvPath.slice(slash + 1);
  return DRV_BASENAME_PATTERN.test(base) ? base.slice(0, 32) : null;
}

function bad(message: string): never {
  throw new InvalidInputError(`invalid submission: ${message}`);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === "string");
}

function checkNode(n: DrvNode): void {
  const where = typeof n?.drvPath === "string" ? n.drvPath : "<node without drvPath>";
  if (drvHashPart(n.drvPath) === null) bad(`${where}: drvPath is not a store path ending in .drv`);
  if (typeof n.name !== "string" || n.name === "") bad(`${where}: name is empty`);
  if (typeof n.pname !== "string" || typeof n.version !== "string") bad(`${where}: pname/version must be strings`);
  if (typeof n.system !== "string" || n.system === "") bad(`${where}: system is empty`);
  if (n.outputs === null || typeof n.outputs !== "object") bad(`${where}: outputs missing`);
  const outs = Object.entries(n.outputs);
  if (outs.length === 0) bad(`${where}: has no outputs`);
  for (const [name, path] of outs) {
    if (name === "" || typeof path !== "string" || !path.startsWith("/")) bad(`${where}: output ${name} has no store path`);
  }
  if (!Array.isArray(n.inputDrvs)) bad(`${where}: inputDrvs must be a list`);
  if (!isStringArray(n.inputSrcs)) bad(`${where}: inputSrcs must be strings`);
  if (!isStringArray(n.requiredSystemFeatures)) bad(`${where}: requiredSystemFeatures must be strings`);
}

// `lastUser` maps an input to the last node that listed it: a cheap duplicate check without a Set per node.
function checkInputs(n: DrvNode, nodes: Map<DrvPath, DrvNode>, lastUser: Map<DrvPath, DrvPath>): void {
  for (const input of n.inputDrvs) {
    const dep = nodes.get(input?.drvPath);
    if (dep === undefined) bad(`${n.drvPath}: input ${input?.drvPath} is not among the submitted nodes`);
    if (input.drvPath === n.drvPath) bad(`${n.drvPath}: depends on itself`);
    if (lastUser.get(input.drvPath) === n.drvPath) bad(`${n.drvPath}: lists input ${input.drvPath} twice`);
    lastUser.set(input.drvPath, n.drvPath);
    if (!isStringArray(input.outputs) || input.outputs.length === 0) bad(`${n.drvPath}: uses no output of ${input.drvPath}`);
    for (const o of input.outputs) {
      if (!(o in dep.outputs)) bad(`${n.drvPath}: uses output ${o} that ${input.drvPath} does not have`);
    }
  }
}

/** Checks a submission completely; throws InvalidInputError on the first problem. */
export function validateSubmission(sub: Submission): ValidDag {
  return runAll(validateSteps(sub, new SliceBudget(0)));
}

/** validateSubmission in slices of `budget` (nodes checked, edges followed). */
export function* validateSteps(sub: Submission, budget: SliceBudget): Steps<ValidDag> {
  if (typeof sub.jobId !== "string" || !JOB_ID_PATTERN.test(sub.jobId)) bad(`job id ${JSON.stringify(sub.jobId)} must match ${JOB_ID_PATTERN}`);
  if (typeof sub.description !== "string") bad("description must be a string");
  if (typeof sub.idempotencyKey !== "string") bad("idempotencyKey must be a string");
  if (!Array.isArray(sub.nodes) || sub.nodes.length === 0) bad("no nodes");
  if (!isStringArray(sub.roots) || sub.roots.length === 0) bad("no roots");
  const nodes = new Map<DrvPath, DrvNode>();
  for (const n of sub.nodes) {
    if (n === null || typeof n !== "object") bad("a node is not an object");
    checkNode(n);
    if (nodes.has(n.drvPath)) bad(`${n.drvPath}: submitted twice`);
    nodes.set(n.drvPath, n);
    if (budget.spend()) yield;
  }
  const lastUser = new Map<DrvPath, DrvPath>();
  for (const n of sub.nodes) {
    checkInputs(n, nodes, lastUser);
    if (budget.spend(1 + n.inputDrvs.length)) yield;
  }
  for (const r of sub.roots) if (!nodes.has(r)) bad(`root ${r} is not among the submitted nodes`);
  const topo = yield* topoOrderSteps(new Set(nodes.keys()), (p) => nodes.get(p)!, budget);
  if ("cycleAt" in topo) bad(`dependency cycle: ${topo.cycleAt} is on or depends on a cycle`);
  return { nodes, order: topo.order };
}
