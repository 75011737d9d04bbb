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

/**
 * The Hydra-like run to compare against: the faithful one when it finished,
 * else the one whose retries never run out (null when neither finished).
 */
export function hydraBaseline(o: BenchOutcome): BenchRow | null {
  for (const v of ["hydra-like", "hydra-patient"] as const) {
    const r = o.rows.find((x) => x.variant === v);
    if (r !== undefined && finished(r.result)) return r;
  }
  return null;
}

function row(o: BenchOutcome, r: BenchRow, hydra: BenchRow | null): string {
  const res = r.result;
  const ratio = finished(res) ? `${(res.makespanMs / o.bound.boundMs).toFixed(2)}×` : "—";
  let vsHydra = "—";
  if (hydra !== null && !r.variant.startsWith("hydra") && finished(res)) {
    const x = `${(hydra.result.makespanMs / res.makespanMs).toFixed(2)}×`;
    vsHydra = hydra.variant === "hydra-like" ? x : `${x} (vs retries unlimited)`;
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
  const hydra = hydraBaseline(o);
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
    const base = hydraBaseline(o);
    const gaveUp = finished(hydra) ? "" : `hydra-like ${hydra.end} (${hydra.failedDerivations} drvs failed); `;
    if (!finished(warm)) out.push(`- ${name}: ≥ 1.3× better than hydra-like: **MISSED** (ours did not finish)`);
    else if (base === null) out.push(`- ${name}: ≥ 1.3× better than hydra-like: MET (${gaveUp}not even with retries unlimited did it finish)`);
    else {
      const x = base.result.makespanMs / warm.makespanMs;
      const vs = base.variant === "hydra-like" ? "" : `, against ${VARIANT_LABELS[base.variant]} (${fmtDuration(base.result.makespanMs)})`;
      out.push(`- ${name}: ≥ 1.3× better makespan than hydra-like: ${mark(x >= 1.3)} (${gaveUp}${x.toFixed(2)}×${vs})`);
    }
  }
  return out;
}

/** What one seed of a case measured, for the summary over seeds. */
export interface SeedLine {
  seed: number;
  /** ours (with history) ÷ lower bound; null when it did not finish. */
  oursRatio: number | null;
  oursOoms: number;
  /** The baseline's makespan ÷ ours (see hydraBaseline); null when not comparable. */
  vsHydra: number | null;
  hydraLabel: string;
}

/** The per-seed numbers of one outcome. */
export function seedLine(o: BenchOutcome): SeedLine {
  const warm = o.rows.find((r) => r.variant === "ours-history")?.result;
  const base = hydraBaseline(o);
  const ok = warm !== undefined && finished(warm);
  const faithful = o.rows.find((r) => r.variant === "hydra-like");
  return {
    seed: o.seed,
    oursRatio: ok ? warm.makespanMs / o.bound.boundMs : null,
    oursOoms: warm?.oomKills ?? 0,
    vsHydra: ok && base !== null ? base.result.makespanMs / warm.makespanMs : null,
    hydraLabel: faithful === undefined ? "-" : finished(faithful.result) ? "built" : `${faithful.result.end} (${faithful.result.failedDerivations} drvs)`,
  };
}

/** The median of `xs` (null entries count as +Infinity: a run that did not finish is worse than any). */
export function median(xs: readonly (number | null)[]): number | null {
  if (xs.length === 0) return null;
  const v = xs.map((x) => x ?? Infinity).sort((a, b) => a - b);
  const mid = v.length >> 1;
  const m = v.length % 2 === 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return Number.isFinite(m) ? m : null;
}

/** A case's table over seeds, with medians, and its targets judged on the medians. */
export function seedsSummary(name: string, lines: readonly SeedLine[], hydraTarget: boolean): { table: string; targets: string[] } {
  const fx = (x: number | null) => (x === null ? "—" : `${x.toFixed(2)}×`);
  const rows = lines.map((l) => `| ${l.seed} | ${fx(l.oursRatio)} | ${l.oursOoms} | ${l.hydraLabel} | ${fx(l.vsHydra)} |`);
  const medRatio = median(lines.map((l) => l.oursRatio));
  const medVs = median(lines.map((l) => l.vsHydra));
  const ooms = lines.reduce((n, l) => n + l.oursOoms, 0);
  const table = [
    `### ${name} over ${lines.length} seeds`,
    "",
    "| seed | ours (history) ÷ lower bound | OOM kills (history) | hydra-like | hydra-like (or retries unlimited) ÷ ours |",
    "|---|---|---|---|---|",
    ...rows,
    `| **median** | **${fx(medRatio)}** | ${ooms} in all | | **${fx(medVs)}** |`,
  ].join("\n");
  const mark = (ok: boolean): string => (ok ? "MET" : "**MISSED**");
  const targets = [
    `- ${name}: median over seeds within 1.15× of the lower bound: ${mark(medRatio !== null && medRatio <= 1.15)} (${fx(medRatio)}; worst ${fx(Math.max(...lines.map((l) => l.oursRatio ?? Infinity)))})`,
    `- ${name}: zero OOM kills with history, every seed: ${mark(ooms === 0)} (${ooms})`,
  ];
  if (hydraTarget) targets.push(`- ${name}: median ≥ 1.3× better makespan than hydra-like: ${mark(medVs !== null && medVs >= 1.3)} (${fx(medVs)})`);
  return { table, targets };
}
