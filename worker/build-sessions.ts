// Build sessions: long-lived `nix-store --serve --write` processes, each
// building one derivation at a time. A `nix-store -r` per build paid the start
// of Nix on every build (linking its C++ libraries, opening the database): about
// 30 ms of CPU, twice the cost of the build of a trivial derivation. A session
// pays it once. Nix fixes a process's cores when it starts, so sessions are
// kept per cores value.
//
// Each session has a TMPDIR of its own, where Nix makes (and removes) its build
// dirs; it goes when the session ends, with whatever a killed build left there.
// A session holds every path it built or used as a temporary GC root while it
// lives: deleting paths or collecting garbage ends the idle ones first (see
// NixStore.close), and a busy one ends when its build does.
import { mkdir, mkdtemp } from "node:fs/promises";
import path from "node:path";
import { removeTree } from "./nix-build.js";
import type { NixEnv } from "./nix-env.js";
import { NixServe } from "./nix-serve.js";

/**
 * Idle sessions kept for the next builds (one per build slot is what a worker
 * uses). An idle one holds about 3 MB of its own; its libraries are shared with
 * the one building.
 */
const MAX_IDLE = 4;

/** One session and what it was started with. */
export interface BuildSession {
  readonly serve: NixServe;
  readonly cores: number;
  /** Its TMPDIR. */
  readonly tmpDir: string;
  /** The pool's generation when it started: an older session is ended when released. */
  readonly generation: number;
}

/** The build sessions of one worker store. */
export class BuildSessions {
  private readonly idle: BuildSession[] = [];
  private generation = 0;

  constructor(private readonly nix: NixEnv) {}

  /** A session building with `cores` (an idle one, or a new one), for the caller alone until release(). */
  async acquire(cores: number): Promise<BuildSession> {
    const i = this.idle.findIndex((s) => s.cores === cores && s.serve.alive);
    if (i >= 0) return this.idle.splice(i, 1)[0];
    await mkdir(this.nix.buildTmpRoot, { recursive: true });
    const tmpDir = await mkdtemp(path.join(this.nix.buildTmpRoot, "s-"));
    try {
      const serve = await NixServe.start(this.nix.env(tmpDir), {
        // Inputs were fetched already and checked: nothing to substitute, only the one derivation to build.
        args: ["--max-jobs", "1", "--cores", String(cores), "--option", "substitute", "false"],
        detached: true,
      });
      return { serve, cores, tmpDir, generation: this.generation };
    } catch (err) {
      await removeTree(tmpDir);
      throw err;
    }
  }

  /** Gives a session back: kept for the next build while it is alive and current, ended otherwise. */
  release(session: BuildSession): Promise<void> {
    if (!session.serve.alive || session.generation !== this.generation) return end(session);
    this.idle.push(session);
    const surplus = this.idle.splice(0, Math.max(0, this.idle.length - MAX_IDLE));
    return Promise.all(surplus.map(end)).then(() => undefined);
  }

  /** Ends the idle sessions now and a busy one when it is released (they hold temporary roots). */
  async closeIdle(): Promise<void> {
    this.generation++;
    await Promise.all(this.idle.splice(0).map(end));
  }
}

async function end(session: BuildSession): Promise<void> {
  await session.serve.close();
  await removeTree(session.tmpDir);
}
