// `farm search|list|upgrade|remove|rollback|gc`: the package manager's verbs
// besides install (install/package-verbs.ts holds their logic). Each takes --json.
import type { CommandContext } from "./main.js";
import { InvalidInputError } from "../core/errors.js";
import { searchIndex } from "../../proto/nix/mod.js";
import { gc, remove, rollback, upgrade } from "./install/package-verbs.js";
import type { InstalledPackage } from "./install/manifest.js";
import { verbDeps } from "./package-context.js";
import { formatBytes } from "./format.js";

const json = (ctx: CommandContext, v: unknown) => ctx.out(JSON.stringify(v, null, 2));
const label = (p: { name: string; version?: string }) => (p.version ? `${p.name} ${p.version}` : p.name);

/** `farm search WORD`: names in the index whose name or source contains WORD. */
export async function search(ctx: CommandContext): Promise<number> {
  const [word = ""] = ctx.positionals;
  if (ctx.positionals.length > 1) throw new InvalidInputError("usage: farm search [WORD]");
  const d = verbDeps(ctx, { cache: true });
  const found = searchIndex(await d.index!(), word);
  if (ctx.json) return json(ctx, found), 0;
  if (found.length === 0) ctx.err(`nothing in the index matches '${word}'`);
  for (const e of found) ctx.out(`${label(e).padEnd(28)} ${e.source} (built ${e.builtAt})`);
  return found.length ? 0 : 1;
}

/** `farm list`: what the current generation holds. */
export async function list(ctx: CommandContext): Promise<number> {
  if (ctx.positionals.length) throw new InvalidInputError("usage: farm list");
  const { profile } = verbDeps(ctx, { cache: false });
  const generation = await profile.currentNumber();
  const { packages } = await profile.current();
  if (ctx.json) return json(ctx, { generation, generations: await profile.generations(), packages }), 0;
  ctx.out(`generation ${generation} of ${profile.link}`);
  for (const p of packages) ctx.out(`${label(p).padEnd(28)} ${p.source}\n${" ".repeat(29)}${Object.values(p.outputs).join(" ")}`);
  return 0;
}

/** `farm upgrade [NAME...]`: to the index's newest. */
export async function runUpgrade(ctx: CommandContext): Promise<number> {
  const { plan, change } = await upgrade(verbDeps(ctx, { cache: true }), ctx.positionals);
  if (ctx.json) return json(ctx, { ...plan, generation: change?.generation, installed: change?.installed ?? [] }), 0;
  for (const u of plan.upgrades) ctx.out(`upgraded ${label(u.from)} -> ${u.to.version ?? Object.values(u.to.outputs)[0]}`);
  for (const n of plan.current) ctx.out(`${n} is current`);
  for (const s of plan.skipped) ctx.err(`skipped ${s.name}: ${s.why}`);
  if (change) ctx.out(`generation ${change.generation}`);
  return plan.skipped.length && ctx.positionals.length ? 1 : 0;
}

/** `farm remove NAME...`. */
export async function runRemove(ctx: CommandContext): Promise<number> {
  if (ctx.positionals.length === 0) throw new InvalidInputError("usage: farm remove NAME...");
  const change = await remove(verbDeps(ctx, { cache: false }), ctx.positionals);
  if (ctx.json) return json(ctx, change), 0;
  ctx.out(`removed ${ctx.positionals.join(", ")}; generation ${change.generation} ('farm gc' frees the space)`);
  return 0;
}

/** `farm rollback`: back to the previous generation. */
export async function runRollback(ctx: CommandContext): Promise<number> {
  if (ctx.positionals.length) throw new InvalidInputError("usage: farm rollback");
  const r = await rollback(verbDeps(ctx, { cache: false }));
  if (ctx.json) return json(ctx, r), 0;
  ctx.out(`switched from generation ${r.from} to ${r.to}: ${r.packages.map((p: InstalledPackage) => label(p)).join(", ") || "(empty)"}`);
  return 0;
}

/** `farm gc [--dry-run] [--keep-generations]`. */
export async function runGc(ctx: CommandContext): Promise<number> {
  if (ctx.positionals.length) throw new InvalidInputError("usage: farm gc [--dry-run] [--keep-generations]");
  const dryRun = Boolean(ctx.flags["dry-run"]);
  const r = await gc(verbDeps(ctx, { cache: false }), { dryRun, keepGenerations: Boolean(ctx.flags["keep-generations"]) });
  if (ctx.json) return json(ctx, { dryRun, ...r }), 0;
  for (const p of r.deleted) ctx.out(`${dryRun ? "would delete" : "deleted"} ${p}`);
  if (r.generationsDeleted.length) ctx.out(`${dryRun ? "would drop" : "dropped"} generations ${r.generationsDeleted.join(", ")}`);
  ctx.out(`${dryRun ? "would free" : "freed"} ${formatBytes(r.bytesFreed)} (${r.bytesFreed} bytes) in ${r.deleted.length} paths`);
  return 0;
}
