// NixServe against a real `nix-store --serve --write` in a private store.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeFileSync } from "node:fs";
import path from "node:path";
import { encodeExport, encodeString, encodeU64, HashCounter } from "../proto/nix/mod.js";
import { narFromTree } from "../proto/nix/testing/nar-fixtures.js";
import { destroyNixEnv, makeNixEnv, nixLines, runNix, type TestNixEnv } from "../proto/nix/testing/nix-env.js";
import { NixServe, NixServeError, NixServeGoneError } from "./nix-serve.js";

let nix: TestNixEnv;
beforeAll(async () => {
  nix = await makeNixEnv();
});
afterAll(async () => {
  await destroyNixEnv(nix);
});

const exportOf = (storePath: string, nar: Buffer, references: string[] = []) => encodeExport([{ storePath, references, nar: [nar] }]);

describe("NixServe (real nix-store --serve --write)", () => {
  it("answers validity and path infos, imports, and holds what it imported alive until closed", async () => {
    const file = path.join(nix.dir, "hello.txt");
    writeFileSync(file, "hello\n");
    const [added] = await nixLines(nix, "nix-store", ["--add", file]);
    const [hash] = await nixLines(nix, "nix-store", ["-q", "--hash", added]);
    const imported = `${nix.storeDir}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-imported`;
    const nar = narFromTree({ file: `refers to ${added}\n` });
    const counter = new HashCounter();
    counter.update(nar);

    const serve = await NixServe.start(nix.env);
    try {
      expect(await serve.validPaths([added, imported])).toEqual(new Set([added]));
      expect(await serve.pathInfos([added, imported])).toEqual([{ path: added, narHash: hash, narSize: expect.any(Number), references: [] }]);
      await serve.importPaths(exportOf(imported, nar, [added]));
      expect(await serve.validPaths([imported])).toEqual(new Set([imported]));
      expect(await serve.pathInfos([imported])).toEqual([{ path: imported, narHash: counter.result().hash, narSize: nar.length, references: [added] }]);
      // Nix roots what this process imported while it lives.
      await expect(runNix(nix, "nix-store", ["--delete", imported])).rejects.toThrow(/still alive/);
    } finally {
      await serve.close();
    }
    expect(serve.alive).toBe(false);
    await runNix(nix, "nix-store", ["--delete", imported]);
    expect(await nixLines(nix, "nix-store", ["--check-validity", "--print-invalid", imported])).toEqual([imported]);
  });

  it("fails a command with Nix's own error and is gone after it; the next session works", async () => {
    const serve = await NixServe.start(nix.env);
    // What our encoder would never send (it validates NARs): Nix must be the one to refuse it.
    const err = await serve.importPaths([Buffer.concat([encodeU64(1), encodeString("not a NAR")])]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NixServeError);
    expect((err as NixServeError).nixError).toMatch(/Nix archive/);
    expect(serve.alive).toBe(false);
    await expect(serve.validPaths([])).rejects.toBeInstanceOf(NixServeGoneError);
    const next = await NixServe.start(nix.env);
    expect(await next.validPaths([])).toEqual(new Set());
    await next.close();
  });

  it("closes after the commands already queued, and takes no new ones", async () => {
    const serve = await NixServe.start(nix.env);
    const p = `${nix.storeDir}/2mdqa9w1p6cmli6976v4wi0sw9r4p5pr-queued`;
    const importing = serve.importPaths(exportOf(p, narFromTree({ file: "queued" })));
    const closing = serve.close();
    expect(serve.alive).toBe(false);
    await expect(serve.validPaths([p])).rejects.toBeInstanceOf(NixServeGoneError);
    await importing; // finished, not cut off
    await closing;
    expect(await nixLines(nix, "nix-store", ["--check-validity", "--print-invalid", p])).toEqual([]);
  });

  it("lets go of the import's source when Nix fails mid-stream", async () => {
    const serve = await NixServe.start(nix.env);
    let closed = false;
    const source = (async function* () {
      try {
        yield Buffer.concat([encodeU64(1), encodeString("not a NAR")]);
        for (;;) yield Buffer.alloc(1 << 16);
      } finally {
        closed = true;
      }
    })();
    await expect(serve.importPaths(source)).rejects.toThrow(/Nix archive/);
    expect(closed).toBe(true);
  });

  it("is killed by an abort, and says so", async () => {
    const serve = await NixServe.start(nix.env);
    const controller = new AbortController();
    const never = (async function* () {
      yield Buffer.alloc(8, 1);
      await new Promise(() => undefined);
    })();
    const importing = serve.importPaths(never, controller.signal);
    await new Promise((r) => setTimeout(r, 50)); // under way: Nix has the command and waits for the rest
    controller.abort(new Error("build aborted"));
    await expect(importing).rejects.toThrow("build aborted");
    expect(serve.alive).toBe(false);
  });
});
