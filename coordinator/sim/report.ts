// Markdown for benchmark outcomes: one table per DAG, ratios against the
// lower bound and against the hydra-like baseline measured in the same run,
// and the issue's targets checked against the measured numbers (a missed
// target is printed as missed, with the numbers that explain it).
import { VARIANT_LABELS, type BenchOutcome, type BenchRow } from "./bench.js";
import { describeFleet } from "./fleet.js";
import { decisionsPerSecond, type SimResult } from "./sim-result.js";

const HOUR = 3_600_000;

/** "12.3 h", "45 min" or "20 s". */
export function fmtDuration(ms: number): string {
  if (ms >= HOUR) return `${(ms / HOUR).toFixed(1)} h`;
  if (ms >= 60_000) return `${(ms / 60_000).toFixed(0)} min`;
  return `${(ms / 1000).toFixed(0)} s`;
}

function cpuHours(ms: number): string {
  return `${(ms / HOUR).toFixed(1)} CPU-h`;
}

function finished(r: SimResult): boolean {
  return r.end === "succeeded";
}

function endText(r: SimResult): string {
  if (r.end === "succeeded") return "built";
  if (r.end === "failed") return `**failed** (${r.failedDerivations} drvs)`;
  return `**${r.end}**`;
}

function row(o: BenchOutcome, r: BenchRow, hydra: BenchRow | undefined): string {
  const res = r.result;
  const ratio = finished(res) ? `${(res.makespanMs / o.bound.boundMs).toFixed(2)}×` : "—";
  let vsHydra = "—";
  if (hydra !== undefined && r !== hydra && finished(res)) {
    vsHydra = finished(hydra.result) ? `${(hydra.result.makespanMs / res.makespanMs).toFixed(2)}×` : "∞ (hydra-like did not finish)";
  }
  const dps = decisionsPerSecond(res);
  const usPerCall = res.schedulerCalls > 0 ? (res.schedulerWallMs * 1000) / res.schedulerCalls : 0;
  return [
    VARIANT_LABELS[r.variant],
    endText(res),
    fmtDuration(res.makespanMs),
    ratio,
    vsHydra,
    `${res.oomKills}`,
    `${cpuHours(res.recycleLostCpuMs)} (${res.recycleLostBuilds})`,
    `${res.extraBuilds}`,
    `${Math.round(dps).toLocaleString("en-US")} (${usPerCall.toFixed(1)} µs)`,
  ].join(" | ");
}

/** The Markdown table of one case, with its bound and fleet. */
export function caseTable(o: BenchOutcome): string {
  const b = o.bound;
  const hydra = o.rows.find((r) => r.variant === "hydra-like");
  const lines = [
    `### ${o.dag.name}: ${o.rows[0]?.result.derivations ?? o.dag.nodes.length} derivations, seed ${o.seed}`,
    "",
    `Fleet: ${describeFleet(o.fleet)}.  `,
    `Lower bound ${fmtDuration(b.boundMs)} = max(critical path ${fmtDuration(b.criticalPathMs)}, work ${cpuHours(b.totalWorkCpuMs)} / cores = ${fmtDuration(b.workBoundMs)}).` +
      (b.criticalChain.length > 0 ? ` Critical path's long builds: ${b.criticalChain.map((c) => `${c.name} ${fmtDuration(c.ms)}`).join(" → ")}.` : "") +
      (b.neverFit.length > 0 ? ` Never fits any worker: ${b.neverFit.join(", ")}.` : ""),
    "",
    "| policy | result | makespan | ÷ lower bound | hydra-like ÷ this | OOM kills | lost to recycling (builds) | extra builds | scheduler calls/s (per call) |",
    "|---|---|---|---|---|---|---|---|---|",
    ...o.rows.map((r) => `| ${row(o, r, hydra)} |`),
  ];
  for (const r of o.rows.filter((x) => x.result.stuck.length > 0)) {
    lines.push("", `Why ${VARIANT_LABELS[r.variant]} did not finish (the scheduler's reasons):`, ...r.result.stuck.map((a) => `- ${a}`));
  }
  const notes = o.rows.filter((r) => r.result.anomalies.length > 0);
  for (const r of notes) lines.push("", `Anomalies under ${VARIANT_LABELS[r.variant]}:`, ...r.result.anomalies.map((a) => `- ${a}`));
  return lines.join("\n");
}

/** Target lines (met or missed, with the measured numbers) for one case. */
export function targetLines(o: BenchOutcome, hydraTarget: boolean): string[] {
  const warm = o.rows.find((r) => r.variant === "ours-history")?.result;
  const hydra = o.rows.find((r) => r.variant === "hydra-like")?.result;
  if (warm === undefined) return [];
  const name = o.dag.name;
  const out: string[] = [];
  const mark = (ok: boolean): string => (ok ? "MET" : "**MISSED**");
  if (finished(warm)) {
    const ratio = warm.makespanMs / o.bound.boundMs;
    let why = "";
    if (ratio > 1.15) {
      why =
        ` — ${cpuHours(warm.recycleLostCpuMs)} lost to recycling in ${warm.recycleLostBuilds} builds, ` +
        `${cpuHours(warm.oomCpuMs)} in ${warm.oomKills} OOM kills, ${warm.extraBuilds} extra builds; ` +
        `the bound assumes every critical build starts on a fresh worker at once`;
    }
    out.push(`- ${name}: ours (with history) within 1.15× of the lower bound: ${mark(ratio <= 1.15)} (${ratio.toFixed(2)}×)${why}`);
  } else {
    out.push(`- ${name}: ours (with history) within 1.15× of the lower bound: **MISSED** (run ${warm.end})`);
  }
  out.push(`- ${name}: zero OOM kills with history: ${mark(warm.oomKills === 0)} (${warm.oomKills})`);
  if (hydraTarget && hydra !== undefined) {
    if (!finished(warm)) out.push(`- ${name}: ≥ 1.3× better than hydra-like: **MISSED** (ours did not finish)`);
    else if (!finished(hydra)) out.push(`- ${name}: ≥ 1.3× better than hydra-like: MET (hydra-like ${hydra.end}, ${hydra.failedDerivations} drvs failed)`);
    else {
      const x = hydra.makespanMs / warm.makespanMs;
      out.push(`- ${name}: ≥ 1.3× better makespan than hydra-like: ${mark(x >= 1.3)} (${x.toFixed(2)}×)`);
    }
  }
  return out;
}
