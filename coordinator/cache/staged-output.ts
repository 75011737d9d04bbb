// Outputs a worker uploaded under a lease, waiting for the farm to accept that
// lease's result. They are stored (the NAR file is in place) but unsigned and
// never served. Accepting the result publishes them: signed, with a provenance
// record of who built them for which lease and job. Nothing else ever signs a
// worker's output, so a signature means "the farm accepted this build".
import { createHash } from "node:crypto";
import type { Logger } from "pino";
import type { Lease } from "../core/types.js";
import { formatNarInfo, hashPart, narInfoFingerprint, parseNarInfo, storeDirOf, withSignature, type NarInfo, type NixKey } from "../../proto/nix/mod.js";
import { FingerprintSigner } from "./fingerprint-signer.js";
import type { CacheStorage } from "./storage.js";
import { isPublished } from "./published.js";
import type { HeldNar } from "./upload.js";

/** A staged output as stored (kind "staged"). */
export interface StagedOutput {
  /** The unsigned narinfo the upload produced. */
  narInfo: string;
  workerId: string;
  drvPath: string;
  epoch: number;
  stagedAtMs: number;
  /** Its NAR file was kept in memory, not written: only a publish given those bytes may sign it. */
  narHeld?: true;
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

/**
 * What accepting one output will do, decided before anything is written: it was
 * published before ("present": that build stands), it can't be ("missing":
 * nothing staged for this lease and worker, not what the worker reported, or a
 * reference unpublished), or it will be, signed as it is written.
 */
export type OutputPlan =
  | { outcome: "present" }
  | { outcome: "missing" }
  | PublishPlan;

/** An output to publish: its narinfo (signed as it is written), its provenance record, and the staged record they replace. */
export interface PublishPlan {
  outcome: "publish";
  storePath: string;
  unsigned: NarInfo;
  provenance: string;
  stagedName: string;
  /** The NAR file, when staging kept it in memory: written beside the narinfo, and in place before it. */
  nar?: HeldNar;
  /** What the log line says once it is published. */
  log: Record<string, unknown>;
}

/** What attempts to write one output have done: its signed narinfo, once signed; whether it is in place. */
interface WriteProgress {
  narInfo?: string;
  narInfoCommitted: boolean;
}

/** How a failed write of an accepted output is retried: first wait, doubling up to the last. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 5000;

/**
 * Publishes the outputs of accepted builds; the only code that signs a worker's output.
 *
 * Accepting is two steps so that the coordinator's serial turn holds only the
 * first: `plan` decides from memory (staged record, published narinfos), and
 * `publish` signs (on the signer's thread) and writes the files, which may take
 * a few fsyncs. From
 * `publish` on, the path counts as published for every later plan, so a
 * second build of it (a backup copy) finds it present, not free.
 */
export class OutputPublisher {
  /** Paths being written by `publish`, by hash part: counted as published by later plans. */
  private readonly writing = new Map<string, string>();
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = false;
  private readonly signer: FingerprintSigner;

  constructor(private readonly d: { storage: CacheStorage; signingKey: NixKey; logger: Logger; now?: () => number }) {
    this.signer = new FingerprintSigner(d.signingKey);
  }

  /** The unsigned narinfo `workerId` staged for `storePath` under `lease`, or null. */
  async staged(storePath: string, lease: Lease, workerId: string): Promise<NarInfo | null> {
    return (await this.stagedEntry(storePath, stagedName(storePath, lease, workerId), lease, workerId))?.info ?? null;
  }

  /**
   * The staged narinfo stored under `name` (stagedName of the other three), and whether its NAR was held in
   * memory rather than written. `held`: what staging kept of a held NAR's record; used only when the stored
   * record is that very text (then it parses alike).
   */
  private async stagedEntry(storePath: string, name: string, lease: Lease, workerId: string, held?: HeldNar): Promise<{ info: NarInfo; narHeld: boolean } | null> {
    const raw = await this.d.storage.getText("staged", name);
    if (raw === null) return null;
    const fromStaging = held !== undefined && raw === held.staged.text ? held.staged : undefined;
    const staged = fromStaging?.record ?? (JSON.parse(raw) as StagedOutput);
    const info = fromStaging?.narInfo ?? parseNarInfo(staged.narInfo, storeDirOf(storePath));
    const same = info.storePath === storePath && staged.workerId === workerId && staged.drvPath === lease.drvPath && staged.epoch === lease.epoch;
    return same ? { info, narHeld: staged.narHeld === true } : null;
  }

  /** True if `base` (a store path's base name) is published or being published. */
  private async counts(base: string, storeDir: string): Promise<boolean> {
    return this.writing.get(base.slice(0, 32)) === `${storeDir}/${base}` || (await isPublished(this.d.storage, base, storeDir));
  }

  /**
   * Decides what accepting `workerId`'s upload of `storePath` under `lease` does; writes nothing.
   * `siblings`: base names of the other outputs of the same build, counted as published where referenced
   * (a `dev` output refers to `out`, which is published with it, not before it).
   */
  async plan(
    storePath: string,
    lease: Lease,
    workerId: string,
    reportedNarHash: string | undefined,
    jobs: string[],
    opts: { confirms?: string; siblings?: ReadonlySet<string>; heldNar?: HeldNar } = {},
  ): Promise<OutputPlan> {
    const { storage, logger } = this.d;
    const storeDir = storeDirOf(storePath);
    const hash = hashPart(storePath);
    if (this.writing.has(hash)) return { outcome: "present" };
    const existing = await storage.getText("narinfo", hash);
    if (existing !== null) {
      const info = parseNarInfo(existing, storeDir);
      if (reportedNarHash && reportedNarHash !== info.narHash) logger.warn({ storePath, worker: workerId, reported: reportedNarHash, published: info.narHash }, "output differs from the accepted build published before (that one stands)");
      return { outcome: "present" };
    }
    const name = stagedName(storePath, lease, workerId);
    const entry = await this.stagedEntry(storePath, name, lease, workerId, opts.heldNar);
    if (entry === null) return { outcome: "missing" };
    const unsigned = entry.info;
    if (reportedNarHash && reportedNarHash !== unsigned.narHash) {
      logger.warn({ storePath, worker: workerId, reported: reportedNarHash, staged: unsigned.narHash }, "reported output is not what was uploaded");
      return { outcome: "missing" };
    }
    const self = storePath.slice(storeDir.length + 1);
    for (const ref of unsigned.references) {
      if (ref !== self && !opts.siblings?.has(ref) && !(await this.counts(ref, storeDir))) {
        logger.warn({ storePath, reference: ref }, "output references a path the cache does not publish");
        return { outcome: "missing" };
      }
    }
    // A NAR staging held in memory is written by this publish, so it must come with it, and be the one the record
    // names: otherwise the narinfo would name a NAR that is nowhere. A NAR staging wrote is never written again.
    const held = entry.narHeld ? opts.heldNar : undefined;
    if (entry.narHeld && (held === undefined || unsigned.url !== `nar/${held.file}`)) {
      logger.error({ storePath, worker: workerId, held: held?.file, url: unsigned.url }, "a staged output's NAR was held in memory, and this publish does not have it");
      return { outcome: "missing" };
    }
    const acceptedAtMs = (this.d.now ?? Date.now)();
    const provenance: Provenance = { storePath, narHash: unsigned.narHash, workerId, drvPath: lease.drvPath, epoch: lease.epoch, jobs, acceptedAtMs, ...(opts.confirms ? { confirms: opts.confirms } : {}) };
    return {
      outcome: "publish",
      storePath,
      unsigned,
      provenance: JSON.stringify(provenance),
      stagedName: name,
      ...(held ? { nar: held } : {}),
      log: { storePath, worker: workerId, drv: lease.drvPath, epoch: lease.epoch, jobs, narSize: unsigned.narSize },
    };
  }

  /**
   * Writes the planned outputs; resolves once every one is in place and flushed. The paths count as
   * published for later plans from this call on. A failed write is retried until it lands (the build was
   * accepted: the cache must come to say so), unless the publisher is stopped.
   */
  publish(plans: readonly OutputPlan[]): Promise<void> {
    const writes: Promise<void>[] = [];
    for (const p of plans) {
      if (p.outcome !== "publish") continue;
      const hash = hashPart(p.storePath);
      if (this.writing.has(hash)) continue; // planned twice before either was written: the first stands
      this.writing.set(hash, p.storePath);
      const written = this.writeUntilDone(p).finally(() => {
        this.writing.delete(hash);
        this.inFlight.delete(written);
      });
      this.inFlight.add(written);
      writes.push(written);
    }
    return Promise.all(writes).then(() => undefined);
  }

  /** Resolves once every publish started so far has landed (or failed). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
  }

  /** From now on a failed write rejects instead of being retried (the coordinator is stopping). */
  stop(): void {
    this.stopped = true;
  }

  private async writeUntilDone(p: PublishPlan): Promise<void> {
    const progress: WriteProgress = { narInfoCommitted: false };
    for (let attempt = 1; ; attempt++) {
      try {
        await this.write(p, progress);
        return;
      } catch (err) {
        if (this.stopped) throw err;
        const waitMs = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** Math.min(attempt - 1, 10));
        this.d.logger.error({ err, storePath: p.storePath, attempt, waitMs }, "writing an accepted output failed; retrying");
        await new Promise((r) => setTimeout(r, waitMs));
      }
    }
  }

  /** One attempt. `progress` survives a failed one: a narinfo it committed is ours, so a retry goes on to the provenance. */
  private async write(p: PublishPlan, progress: WriteProgress): Promise<void> {
    const { storage } = this.d;
    const hash = hashPart(p.storePath);
    // The provenance is recorded only if this narinfo is the one published: a build published before keeps its own record.
    if (!progress.narInfoCommitted) {
      if (!(await this.putNarInfo(p, hash, progress))) return;
      progress.narInfoCommitted = true;
    }
    await storage.put("provenance", hash, p.provenance);
    await storage.remove("staged", p.stagedName); // last: until the provenance is in place, the staged record still says who built it
    // Debug, as "staged output" is: the provenance record is what keeps who built it.
    this.d.logger.debug(p.log, "published accepted output");
  }

  /**
   * Puts the narinfo in place unless one is (false then). A held NAR is written at the same time as the
   * narinfo's temp file, and is in place, flushed, before the narinfo is: a published narinfo never names a
   * missing NAR. The NAR file is named by its hash, so writing it again (a retry) is harmless.
   */
  private async putNarInfo(p: PublishPlan, hash: string, progress: WriteProgress): Promise<boolean> {
    const { storage } = this.d;
    const signed = async () => (progress.narInfo ??= formatNarInfo(withSignature(p.unsigned, await this.signer.sign(narInfoFingerprint(p.unsigned)))));
    if (p.nar === undefined) return storage.put("narinfo", hash, await signed(), { ifAbsent: true });
    const [narWritten, narInfo] = await Promise.allSettled([storage.put("nar", p.nar.file, p.nar.bytes), signed().then((text) => storage.prepare(text))]);
    if (narInfo.status === "rejected") throw narInfo.reason;
    try {
      if (narWritten.status === "rejected") throw narWritten.reason;
      return await narInfo.value.commit("narinfo", hash, { ifAbsent: true });
    } finally {
      await narInfo.value.discard();
    }
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
