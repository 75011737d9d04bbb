// The global derivation graph and its indexes: nodes, records, dependents,
// the count of unfinished inputs per derivation, priority keys and the ready
// queues, and who holds each lease. Every state change funnels through
// `apply`, which keeps the indexes right (readiness, failure propagation,
// leases) and tells the listener, so no event ever has to scan all derivations.
import { becomeReady, DRV_STATES, fail, isTerminal, newDrvRecord, revive, type DrvRecord } from "./drv-state.js";
import { LeaseIndex } from "./lease-index.js";
import { mergeRank, type PriorityKey, type Rank } from "./priority.js";
import { ReadyQueues } from "./ready-queue.js";
import type { DrvNode, DrvPath, DrvState } from "./types.js";

/** Told about every record change; `from` is null for a record just created or restored. */
export type DrvListener = (rec: DrvRecord, from: DrvState | null, now: number, wasCached: boolean) => void;

/** Prefix of the reason given to derivations whose input failed. */
export const DEPENDENCY_FAILED = "dependency failed: ";

/** Nodes, records and the indexes over them. */
export class DagIndex {
  readonly nodes = new Map<DrvPath, DrvNode>();
  readonly records = new Map<DrvPath, DrvRecord>();
  readonly ready = new ReadyQueues();
  /** Which worker runs which build, kept in line with the records by `apply` and `load`. */
  readonly leases = new LeaseIndex();
  private readonly dependents = new Map<DrvPath, DrvPath[]>();
  private readonly unfinished = new Map<DrvPath, number>();
  /** Records already added to their inputs' dependents lists. */
  private readonly linked = new Set<DrvPath>();
  private readonly ranks = new Map<DrvPath, Rank>();
  private nextSeq = 0;
  /** Canonical small strings and input-output lists shared by every node (see `intern`). */
  private readonly shared = new Map<string, string | string[]>();
  /** Records per state, kept at every change (a scrape must not walk 100k records). */
  private readonly tally = Object.fromEntries(DRV_STATES.map((st) => [st, 0])) as Record<DrvState, number>;

  constructor(private readonly listener: DrvListener) {}

  /**
   * Stores a node with its repeated parts shared: an edge's drv path becomes
   * the input node's own string, and output lists, systems and features one
   * copy each. Decoded submits carry a fresh copy of every one of them (the
   * nixpkgs graph has 370k edges), which was most of a node's heap.
   */
  private intern(node: DrvNode): void {
    for (const input of node.inputDrvs) {
      const known = this.nodes.get(input.drvPath);
      if (known !== undefined) input.drvPath = known.drvPath;
      input.outputs = this.share(input.outputs);
    }
    node.system = this.share(node.system);
    if (node.requiredSystemFeatures.length > 0) node.requiredSystemFeatures = this.share(node.requiredSystemFeatures);
    this.nodes.set(node.drvPath, node);
  }

  private share<T extends string | string[]>(v: T): T {
    const key = typeof v === "string" ? `s:${v}` : `l:${v.join("\u0000")}`;
    const known = this.shared.get(key);
    if (known !== undefined) return known as T;
    this.shared.set(key, v);
    return v;
  }

  /** How many records are in each state now (a copy). O(states). */
  stateCounts(): Record<DrvState, number> {
    return { ...this.tally };
  }

  // The one place record changes are told: keeps the tally, then the listener.
  private changed(rec: DrvRecord, from: DrvState | null, now: number, wasCached = false): void {
    if (from !== null) this.tally[from]--;
    this.tally[rec.state]++;
    this.listener(rec, from, now, wasCached);
  }

  /** Node of a derivation the index knows (throws if unknown: a caller bug). */
  node(drvPath: DrvPath): DrvNode {
    const n = this.nodes.get(drvPath);
    if (n === undefined) throw new Error(`unknown derivation ${drvPath}`);
    return n;
  }

  /** Derivations whose records list `drvPath` as an input. */
  dependentsOf(drvPath: DrvPath): readonly DrvPath[] {
    return this.dependents.get(drvPath) ?? [];
  }

  /** Priority key of a derivation (rank 0 when never ranked). */
  keyOf(drvPath: DrvPath): PriorityKey {
    const r = this.ranks.get(drvPath) ?? { rank: 0, tiebreak: 0 };
    return { ...r, seq: this.records.get(drvPath)?.seq ?? 0 };
  }

  /** Raises a derivation's rank to at least `rank`; re-queues it if ready. */
  raiseRank(drvPath: DrvPath, rank: Rank): void {
    const old = this.ranks.get(drvPath);
    const merged = mergeRank(old, rank);
    if (old !== undefined && old.rank === merged.rank && old.tiebreak === merged.tiebreak) return;
    this.ranks.set(drvPath, merged);
    if (this.ready.has(drvPath)) this.ready.push(this.node(drvPath), this.keyOf(drvPath));
  }

  /** How many inputs of a derivation are not done yet. */
  unfinishedInputs(drvPath: DrvPath): number {
    let n = 0;
    for (const input of this.node(drvPath).inputDrvs) {
      if (this.records.get(input.drvPath)?.state !== "done") n++;
    }
    return n;
  }

  /**
   * Creates the record of a derivation first wanted now, in its computed
   * state: done when cached, ready when every input is done, else waiting.
   * Its inputs' records must already exist (create in topological order).
   */
  create(node: DrvNode, jobId: string, cached: boolean, now: number): DrvRecord {
    this.intern(node);
    const rec = newDrvRecord(node.drvPath, this.nextSeq++);
    rec.jobs.push(jobId);
    this.records.set(rec.drvPath, rec);
    if (cached) {
      rec.state = "done";
      rec.cached = true;
      rec.finishedAtMs = now;
    } else if (this.track(rec) === 0) {
      rec.state = "ready";
      this.ready.push(node, this.keyOf(rec.drvPath));
    }
    this.changed(rec, null, now);
    return rec;
  }

  /** Brings a failed or cancelled derivation back for a new job (waiting, or ready if its inputs are done). */
  revive(rec: DrvRecord, now: number): void {
    const left = this.track(rec);
    this.apply(rec, now, () => revive(rec, left === 0));
  }

  /** Loads a stored record as-is (restore); call `settleRestored` once all are loaded. */
  load(node: DrvNode, rec: DrvRecord): void {
    this.intern(node);
    const old = this.records.get(rec.drvPath);
    if (old !== undefined) this.tally[old.state]--;
    this.tally[rec.state]++;
    this.records.set(rec.drvPath, rec);
    this.leases.sync(rec);
    this.nextSeq = Math.max(this.nextSeq, rec.seq + 1);
  }

  /**
   * After a restore: links and counts every unfinished record, and repairs
   * waiting/ready states the crash may have left inconsistent. Returns records
   * whose failure has to be propagated again.
   */
  settleRestored(now: number): DrvRecord[] {
    const failed: DrvRecord[] = [];
    for (const rec of this.records.values()) {
      if (rec.state === "failed") failed.push(rec);
      // Building records' inputs are done for good: nothing to count or link.
      if (isTerminal(rec.state) || rec.state === "building") continue;
      const left = this.track(rec);
      if (rec.state === "ready" && left > 0) {
        rec.state = "waiting"; // repair, not a transition: the stored state was impossible
        this.ready.remove(rec.drvPath);
        this.changed(rec, "ready", now);
      }
      if (rec.state === "ready") this.ready.push(this.node(rec.drvPath), this.keyOf(rec.drvPath));
      if (rec.state === "waiting" && left === 0) this.apply(rec, now, () => becomeReady(rec));
    }
    return failed;
  }

  /**
   * Runs a verb that changes only how a building record's holders use their
   * workers (startUpload): the lease index follows it, and nothing is stored or
   * counted, as the state is the same (after a restart, they count as building).
   */
  applyToHolders(rec: DrvRecord, verb: () => void): void {
    const state = rec.state;
    verb();
    if (rec.state !== state) throw new Error(`a holder verb moved ${rec.drvPath} from ${state} to ${rec.state}`);
    this.leases.sync(rec);
  }

  /**
   * Runs one verb on `rec` and keeps every index right: the ready queue, the
   * readiness of dependents when it becomes done, and the failure of
   * dependents when it fails.
   */
  apply(rec: DrvRecord, now: number, verb: () => void): void {
    const from = rec.state;
    const wasCached = rec.cached;
    verb();
    this.leases.sync(rec);
    const to = rec.state;
    if (from === "ready" && to !== "ready") this.ready.remove(rec.drvPath);
    if (to === "ready") this.ready.push(this.node(rec.drvPath), this.keyOf(rec.drvPath));
    if (to !== "ready" && to !== "waiting") this.unfinished.delete(rec.drvPath);
    this.changed(rec, from, now, wasCached);
    if (to === "done" && from !== "done") this.releaseDependents(rec, now);
    if (to === "failed" && from !== "failed") this.propagateFailure(rec, now);
  }

  /** (Re)starts tracking an unfinished record: links it to its inputs once, counts them. */
  private track(rec: DrvRecord): number {
    const left = this.unfinishedInputs(rec.drvPath);
    if (!this.linked.has(rec.drvPath)) {
      this.linked.add(rec.drvPath);
      for (const input of this.node(rec.drvPath).inputDrvs) {
        const list = this.dependents.get(input.drvPath);
        if (list === undefined) this.dependents.set(input.drvPath, [rec.drvPath]);
        else list.push(rec.drvPath);
      }
    }
    this.unfinished.set(rec.drvPath, left);
    return left;
  }

  private releaseDependents(rec: DrvRecord, now: number): void {
    for (const d of this.dependentsOf(rec.drvPath)) {
      const left = this.unfinished.get(d);
      if (left === undefined) continue;
      this.unfinished.set(d, left - 1);
      const dep = this.records.get(d)!;
      if (left - 1 === 0 && dep.state === "waiting") this.apply(dep, now, () => becomeReady(dep));
    }
  }

  /** Fails every waiting derivation downstream of `root` ("dependency failed: <root cause>"). */
  propagateFailure(root: DrvRecord, now: number): void {
    // Iterative: a 100k-deep chain must not overflow the stack.
    const reason = root.reason.startsWith(DEPENDENCY_FAILED)
      ? root.reason
      : DEPENDENCY_FAILED + this.node(root.drvPath).name;
    const stack = [root.drvPath];
    while (stack.length > 0) {
      for (const d of this.dependentsOf(stack.pop()!)) {
        const dep = this.records.get(d);
        if (dep === undefined || dep.state !== "waiting") continue;
        const from = dep.state;
        fail(dep, now, reason);
        this.unfinished.delete(d);
        this.changed(dep, from, now);
        stack.push(d);
      }
    }
  }
}
