// Reading a FarmCluster's logs (pino JSON lines) in the fault tests.
import type { FarmCluster } from "../harness/cluster.js";

/** One pino line of interest. */
export interface LogRecord {
  time: number;
  msg: string;
  worker?: string;
  drv?: string;
  epoch?: number;
  outcome?: string;
  handedBack?: number;
  [k: string]: unknown;
}

/** Every JSON line of `text`, in order (lines cut short by a kill are skipped). */
export function records(text: string): LogRecord[] {
  const out: LogRecord[] = [];
  for (const line of text.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as LogRecord);
    } catch {
      // partial line
    }
  }
  return out;
}

/** The coordinator's records with message `msg` (and, if given, about a drv named `name`). */
export function coordinatorRecords(farm: FarmCluster, msg: string, name?: string): LogRecord[] {
  return records(farm.coordinatorLog()).filter((r) => r.msg === msg && (name === undefined || isNamed(r.drv, name)));
}

/** True when `drvPath` is the .drv of a derivation called `name` (e.g. sleeper-1.0). */
export function isNamed(drvPath: string | undefined, name: string): boolean {
  return drvPath !== undefined && drvPath.endsWith(`-${name}.drv`) && drvPath.slice(drvPath.lastIndexOf("/") + 34, -4) === name;
}
