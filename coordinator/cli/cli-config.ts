// Configuration of the `farm` CLI (submit, status, install, ...): one schema,
// read from flags > environment > ~/.config/tmpnix-farm/cli.json (or --config).
import os from "node:os";
import path from "node:path";
import { existsSync } from "node:fs";
import { loadConfig, type ConfigOf, type Schema } from "../../proto/config-schema.js";

export const cliSchema = {
  coordinator: { type: "string", doc: "Coordinator gRPC address (host:port, or https://host:port for TLS)", env: "FARM_COORDINATOR", default: "127.0.0.1:7420" },
  tlsCa: { type: "string", doc: "PEM file of the CA that signed the coordinator's and cache's certificates (implies TLS)", env: "FARM_TLS_CA", default: "" },
  token: { type: "string", doc: "Bearer token for the coordinator and cache uploads", env: "FARM_TOKEN", default: "" },
  storeDir: { type: "string", doc: "Nix store dir the farm builds for", env: "NIX_STORE_DIR", default: "/tmp/nix/store" },
  nixpkgs: {
    type: "string",
    doc: "nixpkgs for 'nixpkgs#attr' refs: a path or a nixexprs.tar.xz URL",
    env: "FARM_NIXPKGS",
    default: "https://channels.nixos.org/nixos-24.05/nixexprs.tar.xz",
  },
  cacheUrl: { type: "string", doc: "Binary cache URL (default: asked from the coordinator)", env: "FARM_CACHE_URL", default: "" },
  trustedKey: { type: "list", doc: "Public keys whose signatures 'farm install' accepts (name:base64, comma-separated)", env: "FARM_TRUSTED_KEYS", default: [] },
  profile: { type: "string", doc: "Profile dir whose bin/ 'farm install' links programs into", env: "FARM_PROFILE", default: path.join(os.homedir(), ".local", "share", "tmpnix", "profile") },
  timeout: { type: "duration", doc: "Deadline of one coordinator call", env: "FARM_RPC_TIMEOUT", default: 30_000 },
} satisfies Schema;

export type CliConfig = ConfigOf<typeof cliSchema>;

/** Default config file, used when it exists. */
export const defaultCliConfigFile = () => path.join(process.env.XDG_CONFIG_HOME ?? path.join(os.homedir(), ".config"), "tmpnix-farm", "cli.json");

/** Loads the CLI config from parsed flags, the environment and the config file. */
export function loadCliConfig(flags: Record<string, string | boolean | undefined>, env = process.env): CliConfig {
  const explicit = (flags.config as string | undefined) ?? env.FARM_CONFIG;
  const file = explicit ?? (existsSync(defaultCliConfigFile()) ? defaultCliConfigFile() : undefined);
  return loadConfig(cliSchema, { flags, env, file });
}
