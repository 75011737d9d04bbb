#!/usr/bin/env node
// `farm`: the one executable. It only parses arguments and dispatches; each
// subcommand lives in its own module.
import { parseArgs } from "node:util";
import { FarmError } from "../core/errors.js";
import { ConfigError, describeSchema, flagOptions } from "../../proto/config-schema.js";
import { cliSchema, loadCliConfig, type CliConfig } from "./cli-config.js";
import { coordinatorSchema } from "../config.js";
import { trustCaForCache } from "../../proto/tls.js";

/** What every subcommand receives. */
export interface CommandContext {
  positionals: string[];
  flags: Record<string, string | boolean | undefined>;
  config: CliConfig;
  json: boolean;
  out: (text: string) => void;
  err: (text: string) => void;
}

interface Command {
  summary: string;
  usage: string;
  /** Extra flags beyond the CLI config schema. */
  flags?: Record<string, { type: "string" | "boolean" }>;
  run: (ctx: CommandContext) => Promise<number>;
}

const load = (m: string) => import(m).then((mod) => mod.run as Command["run"]);

const COMMANDS: Record<string, Command> = {
  submit: {
    summary: "instantiate a ref and build it on the farm",
    usage: "farm submit <nixpkgs#attr | ./file.nix#attr> [--follow] [--no-publish] [--json]  |  farm submit --dag FILE.jsonl[.xz] [--roots DRV,...]",
    flags: { follow: { type: "boolean" }, "no-publish": { type: "boolean" }, description: { type: "string" }, dag: { type: "string" }, roots: { type: "string" } },
    run: async (c) => (await load("./submit.js"))(c),
  },
  status: { summary: "show jobs, or one job", usage: "farm status [job] [--derivations] [--json]", flags: { derivations: { type: "boolean" } }, run: async (c) => (await load("./status.js"))(c) },
  workers: { summary: "list workers", usage: "farm workers [--json]", run: async (c) => (await load("./workers.js"))(c) },
  logs: { summary: "print the build log of a derivation", usage: "farm logs <drv-path> [--json]", run: async (c) => (await load("./logs.js"))(c) },
  cancel: { summary: "cancel a job", usage: "farm cancel <job> [--json]", run: async (c) => (await load("./cancel.js"))(c) },
  withdraw: {
    summary: "unpublish what one worker built alone (admin; e.g. after revoking its token)",
    usage: "farm withdraw <worker> [--dry-run] [--json]",
    flags: { "dry-run": { type: "boolean" } },
    run: async (c) => (await load("./withdraw.js"))(c),
  },
  publish: {
    summary: "publish a name in the package index by hand (admin)",
    usage: "farm publish NAME [OUT=]STORE-PATH... [--source TEXT] [--json]  |  farm publish NAME --job ID [--json]",
    flags: { job: { type: "string" }, source: { type: "string" } },
    run: async (c) => (await load("./publish.js"))(c),
  },
  "publish-nix": {
    summary: "put a Nix that runs from the farm's store dir into the cache, as 'nix' (admin)",
    usage: "farm publish-nix [--from STORE-PATH] [--nix BINARY] [--json]",
    flags: { from: { type: "string" }, nix: { type: "string" } },
    run: async (c) => (await load("./publish-nix/publish-nix.js"))(c),
  },
  unpublish: {
    summary: "withdraw a name from the package index (admin)",
    usage: "farm unpublish NAME [--json]",
    run: async (c) => (await import("./publish.js")).runUnpublish(c),
  },
  install: {
    summary: "install packages by name (or store path) from the cache, without Nix, root or token",
    usage: "farm install <name | store-path | ref>... [--profile DIR] [--trusted-key KEY] [--cache-url URL] [--json]",
    run: async (c) => (await load("./install.js"))(c),
  },
  search: { summary: "search the cache's package index", usage: "farm search [WORD] [--json]", run: async (c) => (await import("./packages.js")).search(c) },
  list: { summary: "list installed packages (current generation)", usage: "farm list [--json]", run: async (c) => (await import("./packages.js")).list(c) },
  upgrade: { summary: "upgrade installed packages to the index's newest", usage: "farm upgrade [NAME...] [--json]", run: async (c) => (await import("./packages.js")).runUpgrade(c) },
  remove: { summary: "remove installed packages (a new generation)", usage: "farm remove NAME... [--json]", run: async (c) => (await import("./packages.js")).runRemove(c) },
  rollback: { summary: "switch back to the previous generation", usage: "farm rollback [--json]", run: async (c) => (await import("./packages.js")).runRollback(c) },
  gc: {
    summary: "drop old generations and delete store paths nothing needs",
    usage: "farm gc [--dry-run] [--keep-generations] [--json]",
    flags: { "dry-run": { type: "boolean" }, "keep-generations": { type: "boolean" } },
    run: async (c) => (await import("./packages.js")).runGc(c),
  },
};

function usage(): string {
  const lines = ["usage: farm <command> [options]", "", "commands:"];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(12)} ${c.summary}`);
  lines.push("  coordinator  run the coordinator and its binary cache (flags below via 'farm coordinator --help')");
  lines.push("", "common options (flag, env, default):", ...describeSchema(cliSchema));
  lines.push("  --config FILE (FARM_CONFIG)\n      JSON file with any of the keys above", "  --json\n      machine-readable output");
  return lines.join("\n");
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(usage() + "\n");
    return name ? 0 : 2;
  }
  if (name === "coordinator") {
    if (rest.includes("--help")) {
      process.stdout.write(["usage: farm coordinator [options]", "", ...describeSchema(coordinatorSchema)].join("\n") + "\n");
      return 0;
    }
    const { runCoordinator } = await import("../main.js");
    return runCoordinator(rest);
  }
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`farm: unknown command '${name}' (see 'farm help')\n`);
    return 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      allowPositionals: true,
      strict: true,
      options: { ...flagOptions(cliSchema), ...command.flags, json: { type: "boolean" }, config: { type: "string" }, help: { type: "boolean" } },
    });
  } catch (err) {
    process.stderr.write(`farm ${name}: ${(err as Error).message}\nusage: ${command.usage}\n`);
    return 2;
  }
  if (parsed.values.help) {
    process.stdout.write(`usage: ${command.usage}\n`);
    return 0;
  }
  try {
    const config = loadCliConfig(parsed.values);
    if (config.tlsCa) trustCaForCache(config.tlsCa); // the cache client trusts the farm's CA too
    return await command.run({
      positionals: parsed.positionals,
      flags: parsed.values,
      config,
      json: Boolean(parsed.values.json),
      out: (t) => process.stdout.write(t + "\n"),
      err: (t) => process.stderr.write(t + "\n"),
    });
  } catch (err) {
    if (err instanceof ConfigError || err instanceof FarmError) {
      process.stderr.write(`farm ${name}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`farm: unexpected error: ${err?.stack ?? err}\n`);
    process.exitCode = 70;
  },
);
