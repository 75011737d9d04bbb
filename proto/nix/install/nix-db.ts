// Registering installed paths in the SQLite database a stock Nix 2.8 keeps
// under the store's state dir (<nix root>/var/nix/db/db.sqlite, schema 10), so
// that Nix treats them as valid: `nix-store -r` downloads nothing and
// `nix-store --verify --check-contents` checks them. Node has no SQLite of its
// own; sql.js (SQLite compiled to wasm) edits an in-memory copy, which then
// replaces the file whole (temp + rename). That is only safe while no Nix
// process has the database open: Nix keeps it in WAL mode, so an open
// database has a -wal/-shm file beside it. With those present (or when the
// file changes under us) nothing is written and NixDbBusyError says why; the
// next install registers what was missed, since every call registers all of
// farm's installed paths that the database lacks.
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { mkdir, open, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { FarmError } from "../../errors.js";
import { nix32Decode } from "../nix32.js";

/** Stock Nix has the database open (or left it mid-transaction): nothing was written. */
export class NixDbBusyError extends FarmError {}

/** The database is not one this code knows how to write (another schema version). */
export class NixDbSchemaError extends FarmError {}

/** The schema version Nix 2.8 writes to db/schema. */
export const NIX_DB_SCHEMA = 10;

/** What Nix records for a valid path. */
export interface ValidPath {
  storePath: string;
  /** `sha256:<nix32>` as in a narinfo. */
  narHash: string;
  narSize: number;
  /** Full store paths. */
  references: string[];
  /** Full .drv path, if known. */
  deriver?: string;
  sigs: string[];
  ca?: string;
}

// Nix 2.8's schema (src/libstore/schema.sql), as `nix-store` creates it in a fresh state dir.
const SCHEMA_SQL = `
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);
create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);
create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;
create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);
create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
`;

interface SqlDb {
  run(sql: string, params?: unknown[]): void;
  exec(sql: string, params?: unknown[]): { columns: string[]; values: unknown[][] }[];
  export(): Uint8Array;
  close(): void;
}
type SqlJs = { Database: new (data?: Uint8Array) => SqlDb };
let sqlJs: Promise<SqlJs> | undefined;
const loadSqlJs = () => (sqlJs ??= (createRequire(import.meta.url)("sql.js") as () => Promise<SqlJs>)());

/** Nix's state dir for a store dir laid out like /tmp/nix/{store,var/nix}. */
export const nixStateDirOf = (storeDir: string) => join(dirname(storeDir), "var", "nix");

/** Nix's base-16 form of a narinfo's `sha256:<nix32>` hash. */
export function base16Hash(narHash: string): string {
  const m = /^sha256:([0-9a-z]{52})$/.exec(narHash);
  if (!m) throw new NixDbSchemaError(`unexpected NarHash '${narHash}'`);
  return `sha256:${nix32Decode(m[1], 32).toString("hex")}`;
}

/**
 * The file with its header switched from WAL to rollback-journal mode (bytes 18
 * and 19), which an in-memory SQLite can open. Only done with no WAL beside it,
 * so the file holds every commit; Nix switches it back to WAL when it opens it.
 */
function legacyHeader(bytes: Buffer): Buffer {
  if (bytes.length >= 20 && bytes[18] === 2 && bytes[19] === 2) {
    bytes[18] = 1;
    bytes[19] = 1;
  }
  return bytes;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

async function assertQuiet(db: string): Promise<void> {
  for (const side of ["-wal", "-shm", "-journal"]) {
    if (await exists(db + side)) throw new NixDbBusyError(`Nix has its database open (${db}${side} exists); run the command again when no Nix is running`);
  }
}

/** Runs `edit` on the database of `stateDir` (created when missing) and replaces it whole if `edit` changed something. */
async function withDb<T>(stateDir: string, edit: (db: SqlDb) => { changed: boolean; result: T }): Promise<T> {
  const dir = join(stateDir, "db");
  const file = join(dir, "db.sqlite");
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const schemaFile = join(dir, "schema");
  const schema = await readFile(schemaFile, "utf8").catch(() => "");
  if (schema && Number(schema.trim()) !== NIX_DB_SCHEMA) throw new NixDbSchemaError(`${schemaFile} says schema ${schema.trim()}; only schema ${NIX_DB_SCHEMA} (Nix 2.8) is written`);
  await assertQuiet(file);
  const before = await stat(file).catch(() => null);
  const SQL = await loadSqlJs();
  const db = new SQL.Database(before ? legacyHeader(await readFile(file)) : undefined);
  try {
    db.run(SCHEMA_SQL);
    const { changed, result } = edit(db);
    if (!changed && before) return result;
    const bytes = db.export();
    const tmp = join(dir, `.db.sqlite.tmp-${randomBytes(4).toString("hex")}`);
    const fh = await open(tmp, "w", 0o644);
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    // Nix may have opened it meanwhile: then its copy wins and ours is dropped.
    const now = await stat(file).catch(() => null);
    try {
      await assertQuiet(file);
      if ((before?.mtimeMs ?? -1) !== (now?.mtimeMs ?? -1) || (before?.size ?? -1) !== (now?.size ?? -1)) throw new NixDbBusyError(`${file} changed while paths were being registered; run the command again`);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
    await rename(tmp, file);
    if (!schema) await writeFile(schemaFile, String(NIX_DB_SCHEMA));
    if (!(await exists(join(dir, "big-lock")))) await writeFile(join(dir, "big-lock"), "", { mode: 0o600 });
    return result;
  } finally {
    db.close();
  }
}

/** Registers the paths the database lacks (with their references) as valid; returns those it added. */
export async function registerValidPaths(stateDir: string, paths: ValidPath[], nowSeconds = Math.floor(Date.now() / 1000)): Promise<string[]> {
  return withDb(stateDir, (db) => {
    const idOf = (p: string): number | undefined => db.exec("select id from ValidPaths where path = ?", [p])[0]?.values[0]?.[0] as number | undefined;
    const added = paths.filter((p) => idOf(p.storePath) === undefined);
    if (added.length === 0) return { changed: false, result: [] };
    db.run("begin");
    for (const p of added) {
      db.run("insert into ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) values (?, ?, ?, ?, ?, null, ?, ?)", [
        p.storePath,
        base16Hash(p.narHash),
        nowSeconds,
        p.deriver ?? null,
        p.narSize,
        p.sigs.join(" "),
        p.ca ?? null,
      ]);
    }
    for (const p of added) {
      const referrer = idOf(p.storePath)!;
      for (const r of p.references) {
        const reference = idOf(r);
        if (reference === undefined) {
          db.run("rollback");
          throw new NixDbSchemaError(`cannot register ${p.storePath}: its reference ${r} is not valid in the Nix database`);
        }
        db.run("insert or ignore into Refs (referrer, reference) values (?, ?)", [referrer, reference]);
      }
    }
    db.run("commit");
    return { changed: true, result: added.map((p) => p.storePath) };
  });
}

/** Removes paths (and their references) from the database; returns those it had. */
export async function unregisterPaths(stateDir: string, storePaths: string[]): Promise<string[]> {
  if (!(await exists(join(stateDir, "db", "db.sqlite")))) return [];
  return withDb(stateDir, (db) => {
    const gone: string[] = [];
    db.run("begin");
    for (const p of storePaths) {
      const id = db.exec("select id from ValidPaths where path = ?", [p])[0]?.values[0]?.[0];
      if (id === undefined) continue;
      db.run("delete from Refs where referrer = ? or reference = ?", [id, id]);
      db.run("delete from DerivationOutputs where drv = ?", [id]);
      db.run("delete from ValidPaths where id = ?", [id]);
      gone.push(p);
    }
    db.run("commit");
    return { changed: gone.length > 0, result: gone };
  });
}

/** Every path the database holds as valid (none when there is no database). */
export async function validPaths(stateDir: string): Promise<string[]> {
  const file = join(stateDir, "db", "db.sqlite");
  if (!(await exists(file))) return [];
  const SQL = await loadSqlJs();
  const db = new SQL.Database(legacyHeader(await readFile(file)));
  try {
    return (db.exec("select path from ValidPaths")[0]?.values ?? []).map((r) => String(r[0]));
  } finally {
    db.close();
  }
}
