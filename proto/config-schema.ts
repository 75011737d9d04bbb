// A small typed config schema shared by the coordinator, the CLI and the worker.
// Each field says where it may come from (flag, env, file) and documents itself,
// so `--help` and the README's reference come from one place. Sources merge as
// defaults < config file < environment < flags; unknown file keys are errors.
// Why under proto/: it is not part of the wire contract, but every program uses
// it, and proto/ is the only code the worker and the coordinator share.
import { readFileSync } from "node:fs";
import { FarmError } from "./errors.js";

export type FieldType = "string" | "int" | "bool" | "list" | "bytes" | "duration";

/** One configuration field. */
export interface FieldSpec<T> {
  type: FieldType;
  /** One line of purpose, shown in --help and the README. */
  doc: string;
  /** Environment variable that sets it. */
  env?: string;
  /** Long flag name without dashes (defaults to the kebab-case of the key). */
  flag?: string;
  default?: T;
  required?: boolean;
  /** Extra check; returns a message when the value is bad. */
  check?: (value: T) => string | undefined;
}

export type Schema = Record<string, FieldSpec<any>>;
export type ConfigOf<S extends Schema> = { [K in keyof S]: S[K] extends FieldSpec<infer T> ? T : never };

/** Bad configuration: lists every problem at once. */
export class ConfigError extends FarmError {
  constructor(readonly problems: string[]) {
    super(problems.length === 1 ? problems[0] : `invalid configuration:\n  ${problems.join("\n  ")}`);
  }
}

const UNITS: Record<string, number> = { "": 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3, t: 1024 ** 4 };
const DURATIONS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Kebab-case flag name for a camelCase key. */
export function flagName(key: string, spec: FieldSpec<unknown>): string {
  return spec.flag ?? key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Parses one raw value (string from a flag/env, or JSON from a file) into the field's type. */
export function parseValue(type: FieldType, raw: unknown): unknown {
  switch (type) {
    case "string":
      if (typeof raw !== "string") throw new Error("expected a string");
      return raw;
    case "int": {
      const n = typeof raw === "number" ? raw : Number(String(raw).trim());
      if (!Number.isSafeInteger(n)) throw new Error(`expected a whole number, got '${raw}'`);
      return n;
    }
    case "bool":
      if (typeof raw === "boolean") return raw;
      if (/^(1|true|yes|on)$/i.test(String(raw))) return true;
      if (/^(0|false|no|off|)$/i.test(String(raw))) return false;
      throw new Error(`expected true or false, got '${raw}'`);
    case "list":
      if (Array.isArray(raw)) return raw.map(String);
      return String(raw).split(",").map((s) => s.trim()).filter(Boolean);
    case "bytes": {
      if (typeof raw === "number") return raw;
      const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(String(raw));
      const unit = m && UNITS[m[2].toLowerCase()];
      if (!m || unit === undefined) throw new Error(`expected a size like 512M or 2G, got '${raw}'`);
      return Math.round(Number(m[1]) * unit!);
    }
    case "duration": {
      if (typeof raw === "number") return raw;
      const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(String(raw));
      if (!m) throw new Error(`expected a duration like 30s, 5m or 12h, got '${raw}'`);
      return Math.round(Number(m[1]) * DURATIONS[(m[2] ?? "ms").toLowerCase()]);
    }
  }
}

/** Where values come from; all optional so tests can pass exactly what they mean. */
export interface ConfigSources {
  flags?: Record<string, string | boolean | undefined>;
  env?: NodeJS.ProcessEnv;
  /** Path of a JSON config file; missing file is an error only when given explicitly. */
  file?: string;
}

/** Merges defaults < file < env < flags, validates, and returns a typed config. */
export function loadConfig<S extends Schema>(schema: S, sources: ConfigSources): ConfigOf<S> {
  const problems: string[] = [];
  const out: Record<string, unknown> = {};
  const set = (key: string, raw: unknown, where: string) => {
    try {
      out[key] = parseValue(schema[key].type, raw);
    } catch (err) {
      problems.push(`${where}: ${(err as Error).message}`);
    }
  };
  for (const [key, spec] of Object.entries(schema)) if (spec.default !== undefined) out[key] = spec.default;
  if (sources.file) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(sources.file, "utf8"));
    } catch (err) {
      throw new ConfigError([`config file ${sources.file}: ${(err as Error).message}`]);
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError([`config file ${sources.file}: expected a JSON object`]);
    }
    for (const [key, raw] of Object.entries(parsed)) {
      if (!(key in schema)) problems.push(`config file ${sources.file}: unknown key '${key}'`);
      else set(key, raw, `config file key '${key}'`);
    }
  }
  for (const [key, spec] of Object.entries(schema)) {
    const raw = spec.env ? sources.env?.[spec.env] : undefined;
    if (raw !== undefined && raw !== "") set(key, raw, `environment ${spec.env}`);
  }
  for (const [key, spec] of Object.entries(schema)) {
    const raw = sources.flags?.[flagName(key, spec)];
    if (raw !== undefined) set(key, raw, `--${flagName(key, spec)}`);
  }
  for (const [key, spec] of Object.entries(schema)) {
    if (out[key] === undefined) {
      if (spec.required) problems.push(`missing ${describeSources(key, spec)}`);
      continue;
    }
    const msg = spec.check?.(out[key]);
    if (msg) problems.push(`${key}: ${msg}`);
  }
  if (problems.length) throw new ConfigError(problems);
  return out as ConfigOf<S>;
}

function describeSources(key: string, spec: FieldSpec<unknown>): string {
  const ways = [`--${flagName(key, spec)}`];
  if (spec.env) ways.push(spec.env);
  ways.push(`'${key}' in the config file`);
  return `${key} (set ${ways.join(", or ")})`;
}

/** parseArgs option table for every field of a schema (all as strings; booleans may be bare). */
export function flagOptions(schema: Schema): Record<string, { type: "string" | "boolean" }> {
  const opts: Record<string, { type: "string" | "boolean" }> = {};
  for (const [key, spec] of Object.entries(schema)) opts[flagName(key, spec)] = { type: spec.type === "bool" ? "boolean" : "string" };
  return opts;
}

/** Help text lines for a schema: flag, env, default, purpose. */
export function describeSchema(schema: Schema): string[] {
  return Object.entries(schema).map(([key, spec]) => {
    const env = spec.env ? ` (${spec.env})` : "";
    const def = spec.default !== undefined && spec.default !== "" ? ` [default: ${JSON.stringify(spec.default)}]` : "";
    return `  --${flagName(key, spec)}${env}${def}\n      ${spec.doc}`;
  });
}
