import { describe, expect, it } from "vitest";
import { NixCommandError, parseDumpDb } from "./nix-store.js";

const A = "/tmp/nix/store/54p3cnzxvhr11saklva8cryka50jha0j-hostname";
const B = "/tmp/nix/store/6crkkd9c58rjkq3ik45xfh5j3z6m1wng-f";
const DRV = "/tmp/nix/store/5g4kwpr0w70gpxbc0dp3yq0c167sxivw-f.drv";

describe("parseDumpDb", () => {
  it("reads hash, size and references of each path, with or without a deriver", () => {
    // As Nix 2.8's `nix-store --dump-db A B` prints it.
    const text = [A, "bcfc1a2d3fcc29a318e1ed9d31e57718f7b16731ac624a48d0ef5ec177372411", "152", "", "0", B, "468db5ea6007c3a5aecb8697570efd25274f83d620158c22f17d8e0978660a12", "184", DRV, "2", A, B, ""].join("\n");
    const infos = parseDumpDb(text);
    expect(infos.map((i) => i.path)).toEqual([A, B]);
    // `nix-store -q --hash A` says sha256:04946xvw2ppgs144lqmc65kv3xqqfzjk37gdw4ca6afc7wnimz5w for that digest.
    expect(infos[0]).toEqual({ path: A, narHash: "sha256:04946xvw2ppgs144lqmc65kv3xqqfzjk37gdw4ca6afc7wnimz5w", narSize: 152, references: [] });
    expect(infos[1].references).toEqual([A, B]);
    expect(infos[1].narSize).toBe(184);
  });

  it("refuses output it does not understand instead of guessing", () => {
    expect(() => parseDumpDb(`${A}\nnot-a-hash\n152\n\n0\n`)).toThrow(NixCommandError);
    expect(() => parseDumpDb(`${A}\nbcfc1a2d3fcc29a318e1ed9d31e57718f7b16731ac624a48d0ef5ec177372411\n152\n\n2\n${B}\n`)).toThrow(/ends before the references/);
  });
});
