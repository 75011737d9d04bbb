// Pure text rendering for the CLI: progress lines, job and worker tables.
// Everything here takes data and returns strings, so it is unit-tested.
import type { JobStatus, WorkerStatus, DerivationStatus } from "../../proto/gen/farm.js";

/** 1.5 GiB, 300 MiB, 12 KiB */
export function formatBytes(n: number): string {
  if (!n) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** 3h05m, 4m20s, 12s */
export function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** One progress line: "[7/14 done, 1 cached] 2 building, 3 queued, 2 waiting, 0 failed, ETA 1m20s". */
export function progressLine(job: JobStatus): string {
  const c = job.counts!;
  const eta = job.state === "running" ? (job.etaMs > 0 ? `, ETA ${formatDuration(job.etaMs)}` : ", ETA unknown") : "";
  const cancelled = c.cancelled ? `, ${c.cancelled} cancelled` : "";
  return `[${c.done}/${c.total} done, ${c.cached} cached] ${c.building} building, ${c.queued} queued, ${c.waiting} waiting, ${c.failed} failed${cancelled}${eta}`;
}

/** The summary printed when a followed job ends. */
export function jobOutcome(job: JobStatus): string {
  const lines: string[] = [];
  if (job.state === "succeeded") {
    lines.push(`job ${job.jobId} succeeded (${job.counts!.total} derivations, ${job.counts!.cached} were cached)`);
    for (const root of job.outputs) for (const p of Object.values(root.outputs)) lines.push(p);
  } else {
    lines.push(`job ${job.jobId} ${job.state}: ${job.counts!.failed} of ${job.counts!.total} derivations failed`);
    for (const f of job.failures) {
      lines.push(`  ${f.name} (${f.drvPath}): ${f.reason}`);
      for (const l of f.logTail) lines.push(`    | ${l}`);
    }
  }
  return lines.join("\n");
}

/** Left-aligned columns. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ");
  return [fmt(header), ...rows.map(fmt)].join("\n");
}

/** `farm status` without a job: one row per job. */
export function jobsTable(jobs: JobStatus[]): string {
  if (jobs.length === 0) return "no jobs";
  return table(
    ["JOB", "STATE", "DONE", "BUILDING", "FAILED", "ETA", "DESCRIPTION"],
    jobs.map((j) => [j.jobId, j.state, `${j.counts!.done}/${j.counts!.total}`, String(j.counts!.building), String(j.counts!.failed), j.etaMs ? formatDuration(j.etaMs) : "-", j.description]),
  );
}

/** `farm status JOB`: the progress line plus, when asked, a row per derivation. */
export function jobDetail(job: JobStatus): string {
  const head = `job ${job.jobId} (${job.description}): ${job.state}\n${progressLine(job)}`;
  if (job.derivations.length === 0) return head;
  return `${head}\n${derivationsTable(job.derivations)}`;
}

/** One row per derivation, with estimates against measurements where known. */
export function derivationsTable(drvs: DerivationStatus[]): string {
  return table(
    ["STATE", "NAME", "WORKER", "CORES", "RESERVED", "EST MEM", "MEM NOW/PEAK", "EST TIME", "TIME", "NOTE"],
    drvs.map((d) => [
      d.state,
      d.name,
      d.workerId || "-",
      d.cores ? String(d.cores) : "-",
      d.reservedMemoryBytes ? formatBytes(d.reservedMemoryBytes) : "-",
      d.estimatedMemoryBytes ? `${formatBytes(d.estimatedMemoryBytes)} (${d.estimateSource || "?"})` : "-",
      memoryCell(d),
      d.estimatedDurationMs ? formatDuration(d.estimatedDurationMs) : "-",
      d.durationMs ? formatDuration(d.durationMs) : "-",
      d.reason || d.holdReason || [d.oomKills ? `${d.oomKills} OOM` : "", d.backupWorkerIds.length ? `backup copy on ${d.backupWorkerIds.join(", ")}` : ""].filter(Boolean).join("; "),
    ]),
  );
}

/** Memory now/peak while building, else the last attempt's peak: "not measured" rather than a 0 that would read as a measurement. */
function memoryCell(d: DerivationStatus): string {
  if (d.state === "building" && d.currentMemoryBytes) return `${formatBytes(d.currentMemoryBytes)}/${formatBytes(d.currentPeakMemoryBytes)}`;
  if (d.peakMemoryNotMeasured) return "not measured";
  return d.peakMemoryBytes ? formatBytes(d.peakMemoryBytes) : "-";
}

/** `farm workers`. */
export function workersTable(workers: WorkerStatus[]): string {
  if (workers.length === 0) return "no workers";
  return table(
    ["WORKER", "STATE", "SYSTEMS", "NIX", "CORES", "MEMORY", "UNRESERVED", "FREE DISK", "LIFE LEFT", "RUNNING", "DONE", "FAILED", "OOM"],
    workers.map((w) => [
      w.workerId,
      w.state,
      w.systems.join(","),
      w.nixVersion ? `${w.nixVersion} (${w.nixSource.startsWith("cache ") ? "from cache" : "host"})` : "-",
      `${w.reservedCores}/${w.cores}`,
      formatBytes(w.memoryBytes),
      formatBytes(w.unreservedMemoryBytes),
      formatBytes(w.freeDiskBytes),
      w.remainingLifetimeSeconds ? formatDuration(w.remainingLifetimeSeconds * 1000) : "-",
      w.running.map((r) => `${r.name} (${r.backupCopy ? "backup copy, " : ""}${r.cores} cores, ${formatBytes(r.reservedMemoryBytes)} reserved, ${formatBytes(r.currentMemoryBytes)} used)`).join("; ") || "-",
      String(w.buildsDone),
      String(w.buildsFailed),
      String(w.oomKills),
    ]),
  );
}
