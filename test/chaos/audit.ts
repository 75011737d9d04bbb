// Reading the coordinator's own logs back after a chaos run: which leases it
// granted, which results workers reported, and whether each was accepted. The
// rules checked here are the farm's promises: a result under a stale lease is
// never accepted, and no derivation has more than one accepted success.
import { readFileSync } from "node:fs";

/** One "build reported" line and what became of it. */
export interface AuditedReport {
  run: number;
  worker: string;
  drv: string;
  epoch: number;
  outcome: string;
  /** The epoch was below the newest lease granted for the drv when it arrived. */
  stale: boolean;
  /** null: the coordinator died before answering. */
  accepted: boolean | null;
  reason?: string;
}

/** Everything the audit found. */
export interface LeaseAudit {
  /** Leases granted ("assigned" lines) = builds started. */
  assignments: number;
  reports: AuditedReport[];
  /** Broken promises, one line each; empty when all is well. */
  violations: string[];
  acceptedSuccesses: Map<string, number>;
  /** The newest lease epoch granted per drv. */
  latestEpoch: Map<string, number>;
}

interface LogLine {
  msg?: string;
  worker?: string;
  drv?: string;
  epoch?: number;
  outcome?: string;
  reason?: string;
}

function parseLines(text: string): LogLine[] {
  const out: LogLine[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as LogLine);
    } catch {
      // a line cut short by SIGKILL
    }
  }
  return out;
}

const key = (worker: string, drv: string, epoch: number) => `${worker} ${epoch} ${drv}`;

/**
 * Audits the logs of successive coordinator runs (oldest first). `killed[i]`
 * says run i was SIGKILLed, so a report it never answered is excused.
 */
export function auditLeases(runs: string[], killed: boolean[]): LeaseAudit {
  const latestEpoch = new Map<string, number>();
  const reports: AuditedReport[] = [];
  const violations: string[] = [];
  const acceptedSuccesses = new Map<string, number>();
  let assignments = 0;
  runs.forEach((text, run) => {
    const pending = new Map<string, AuditedReport[]>();
    for (const l of parseLines(text)) {
      if (l.drv === undefined || l.epoch === undefined) continue;
      if (l.msg === "assigned") {
        assignments++;
        latestEpoch.set(l.drv, Math.max(latestEpoch.get(l.drv) ?? 0, l.epoch));
      } else if (l.msg === "build reported") {
        const r: AuditedReport = { run, worker: l.worker!, drv: l.drv, epoch: l.epoch, outcome: l.outcome!, stale: l.epoch < (latestEpoch.get(l.drv) ?? 0), accepted: null };
        reports.push(r);
        const k = key(r.worker, r.drv, r.epoch);
        pending.set(k, [...(pending.get(k) ?? []), r]);
      } else if (l.msg === "result accepted" || l.msg === "result rejected") {
        const r = pending.get(key(l.worker!, l.drv, l.epoch))?.shift();
        if (!r) {
          violations.push(`run ${run}: "${l.msg}" for ${l.worker} ${l.drv}#${l.epoch} without a report`);
          continue;
        }
        r.accepted = l.msg === "result accepted";
        r.reason = l.reason;
        if (!r.accepted) continue;
        if (r.stale) violations.push(`run ${run}: accepted a stale result from ${r.worker} for ${r.drv}#${r.epoch} (newest lease ${latestEpoch.get(r.drv)})`);
        if (r.epoch !== latestEpoch.get(r.drv)) violations.push(`run ${run}: accepted ${r.drv}#${r.epoch} from ${r.worker}, but the newest lease is #${latestEpoch.get(r.drv)}`);
        if (r.outcome === "succeeded") {
          const n = (acceptedSuccesses.get(r.drv) ?? 0) + 1;
          acceptedSuccesses.set(r.drv, n);
          if (n > 1) violations.push(`run ${run}: ${n} accepted successes of ${r.drv}`);
        }
      }
    }
    const unanswered = [...pending.values()].flat();
    if (unanswered.length > 0 && !killed[run]) {
      violations.push(`run ${run} ended cleanly but never answered ${unanswered.length} report(s), e.g. ${unanswered[0].drv}#${unanswered[0].epoch}`);
    }
  });
  for (const r of reports) if (r.stale && r.accepted === null && !killed[r.run]) violations.push(`stale result ${r.drv}#${r.epoch} was never rejected`);
  return { assignments, reports, violations, acceptedSuccesses, latestEpoch };
}

/** Reads the log files of coordinator runs 1..n. */
export function readRuns(files: string[]): string[] {
  return files.map((f) => {
    try {
      return readFileSync(f, "utf8");
    } catch {
      return "";
    }
  });
}
