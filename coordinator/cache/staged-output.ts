// Outputs a worker uploaded under a lease, waiting for the farm to accept that
// lease's result. They are stored (the NAR file is in place) but unsigned and
// never served. Accepting the result publishes them: signed, with a provenance
// record of who built them for which lease and job. Nothing else ever signs a
// worker's output, so a signature means "the farm accepted this build".
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Lease } from "../core/types.js";
import { formatNarInfo, hashPart, parseNarInfo, signNarInfo, storeDirOf, type NarInfo, type NixKey } from "../../proto/nix/mod.js";
import { prepareAll, type CacheStorage } from "./storage.js";
import { isPublished } from "./published.js";

/** A staged output as stored (kind "staged"). */
export interface StagedOutput {
  /** The unsigned narinfo the upload produced. */
  narInfo: string;
  workerId: string;
  drvPath: string;
  epoch: number;
  stagedAtMs: number;
}

/** Who produced a published output (kind "provenance", by hash part). */
export interface Provenance {
  storePath: string;
  narHash: string;
  workerId: string;
  drvPath: string;
  epoch: number;
  jobs: string[];
  acceptedAtMs: number;
  /** The untrusted worker whose earlier build this one agreed with, when it took two. */
  confirms?: string;
}

/** Who put a path the cache published without a build: a submitter's content-addressed upload, or the operator's. */
export interface UploadProvenance {
  storePath: string;
  narHash: string;
  uploadedBy: string;
  as: "content-addressed" | "publish";
  atMs: number;
}

/** Storage name of one worker's upload of `storePath` under `lease`: a copy of the same lease on another worker is kept apart. */
export function stagedName(storePath: string, lease: Lease, workerId: string): string {
  const key = createHash("sha256").update(`${workerId}\0${lease.drvPath}\0${lease.epoch}`).digest("hex").slice(0, 24);
  return `${hashPart(storePath)}-${key}`;
}

/** How publishing one output went. */
export type PublishOutcome =
  /** Signed and visible now. */
  | "published"
  /** An accepted build of it was published before; it stands. */
  | "present"
  /** Nothing staged for this lease and worker, or not what the worker reported, or a reference is missing. */
  | "missing";

/** Publishes the outputs of accepted builds; the only code that signs a worker's output. */
export class OutputPublisher {
  constructor(private readonly d: { storage: CacheStorage; signingKey: NixKey; logger: Logger; now?: () => number }) {}

  /** The unsigned narinfo `workerId` staged for `storePath` under `lease`, or null. */
  async staged(storePath: string, lease: Lease, workerId: string): Promise<NarInfo | null> {
    const raw = await this.d.storage.getText("staged", stagedName(storePath, lease, workerId));
    if (raw === null) return null;
    const staged = JSON.parse(raw) as StagedOutput;
    const info = parseNarInfo(staged.narInfo, storeDirOf(storePath));
    const same = info.storePath === storePath && staged.workerId === workerId && staged.drvPath === lease.drvPath && staged.epoch === lease.epoch;
    return same ? info : null;
  }

  /** Publishes what `workerId` staged for `storePath` under `lease`, if it is what the worker reported. */
  async publish(storePath: string, lease: Lease, workerId: string, reportedNarHash: string | undefined, jobs: string[], confirms?: string): Promise<PublishOutcome> {
    const { storage, logger } = this.d;
    const storeDir = storeDirOf(storePath);
    const existing = await storage.getText("narinfo", hashPart(storePath));
    if (existing !== null) {
      const info = parseNarInfo(existing, storeDir);
      if (reportedNarHash && reportedNarHash !== info.narHash) logger.warn({ storePath, worker: workerId, reported: reportedNarHash, published: info.narHash }, "output differs from the accepted build published before (that one stands)");
      return "present";
    }
    const name = stagedName(storePath, lease, workerId);
    const raw = await storage.getText("staged", name);
    if (raw === null) return "missing";
    const staged = JSON.parse(raw) as StagedOutput;
    const unsigned: NarInfo = parseNarInfo(staged.narInfo, storeDir);
    if (unsigned.storePath !== storePath || staged.workerId !== workerId || staged.drvPath !== lease.drvPath || staged.epoch !== lease.epoch) return "missing";
    if (reportedNarHash && reportedNarHash !== unsigned.narHash) {
      logger.warn({ storePath, worker: workerId, reported: reportedNarHash, staged: unsigned.narHash }, "reported output is not what was uploaded");
      return "missing";
    }
    const self = storePath.slice(storeDir.length + 1);
    for (const ref of unsigned.references) {
      if (ref !== self && !(await isPublished(storage, ref, storeDir))) {
        logger.warn({ storePath, reference: ref }, "output references a path the cache does not publish");
        return "missing";
      }
    }
    const acceptedAtMs = (this.d.now ?? Date.now)();
    const provenance: Provenance = { storePath, narHash: unsigned.narHash, workerId, drvPath: lease.drvPath, epoch: lease.epoch, jobs, acceptedAtMs, ...(confirms ? { confirms } : {}) };
    // Both files are written at once (each costs a create and an fsync); the narinfo is committed first, and the
    // provenance only if this narinfo is the one published: a build published before keeps its own record.
    const files = await prepareAll(storage, [formatNarInfo(signNarInfo(unsigned, this.d.signingKey)), JSON.stringify(provenance)]);
    try {
      const [narinfoFile, provenanceFile] = files;
      if (!(await narinfoFile.commit("narinfo", hashPart(storePath), { ifAbsent: true }))) return "present";
      await provenanceFile.commit("provenance", hashPart(storePath));
      await storage.remove("staged", name); // last: until the provenance is in place, the staged record still says who built it
    } finally {
      await Promise.all(files.map((f) => f.discard()));
    }
    logger.info({ storePath, worker: workerId, drv: lease.drvPath, epoch: lease.epoch, jobs, narSize: unsigned.narSize }, "published accepted output");
    return "published";
  }

  /**
   * The published outputs `workerId` built with no other build confirming them
   * (a confirmed one names the first builder in `confirms`; that first builder's
   * own record is never the published one). With `apply`, unpublishes them.
   */
  async withdraw(workerId: string, apply: boolean): Promise<Provenance[]> {
    const alone: Provenance[] = [];
    for await (const name of this.d.storage.list("provenance")) {
      const raw = await this.d.storage.getText("provenance", name);
      if (raw === null) continue;
      const p = JSON.parse(raw) as Provenance;
      if (p.workerId !== workerId || p.confirms !== undefined) continue;
      alone.push(p);
      if (!apply) continue;
      await this.d.storage.remove("narinfo", name);
      await this.d.storage.remove("provenance", name);
      this.d.logger.warn({ storePath: p.storePath, worker: workerId, drv: p.drvPath }, "withdrew an output its worker built alone");
    }
    return alone;
  }

  /** Removes staged uploads older than `maxAgeMs` (their leases ended without acceptance); returns how many. */
  async sweep(maxAgeMs: number): Promise<number> {
    const now = (this.d.now ?? Date.now)();
    let removed = 0;
    for await (const name of this.d.storage.list("staged")) {
      const raw = await this.d.storage.getText("staged", name).catch(() => null);
      const at = raw ? (JSON.parse(raw) as StagedOutput).stagedAtMs : 0;
      if (now - at > maxAgeMs) {
        await this.d.storage.remove("staged", name);
        removed++;
      }
    }
    return removed;
  }
}
