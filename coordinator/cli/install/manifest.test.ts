import { describe, expect, it } from "vitest";
import { emptyPackageIndex, withEntry } from "../../../proto/nix/mod.js";
import { emptyManifest, packageFromStorePath, planUpgrade, withoutPackages, withPackages } from "./manifest.js";

const SD = "/tmp/nix/store";
const P1 = `${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-hello-2.10`;
const P2 = `${SD}/0mdqa9w1p6cmli6976v4wi0sw9r4p5pr-hello-2.12`;
const t = new Date(0);

describe("profile manifests", () => {
  it("names a store path as nix-env does", () => {
    expect(packageFromStorePath(P1, SD)).toMatchObject({ name: "hello", version: "2.10", outputs: { out: P1 }, fromIndex: false });
    expect(packageFromStorePath(`${SD}/ya13ysp6mn5s1vkz1023zgghzvb2jlsb-tools`, SD)).toMatchObject({ name: "tools", fromIndex: false });
  });

  it("plans upgrades to the index's newest and says why it skips", () => {
    const entry = (p: string) => ({ name: "hello", outputs: { out: p }, source: "nixpkgs#hello", builtAt: t.toISOString() });
    let index = withEntry(emptyPackageIndex(SD, t), entry(P1), t);
    const byName = { name: "hello", outputs: { out: P1 }, source: "s", fromIndex: true };
    const m = { ...emptyManifest(), packages: withPackages(emptyManifest(), [byName, { ...packageFromStorePath(P1, SD), name: "pinned" }]) };
    expect(planUpgrade(m, index, []).current).toEqual(["hello"]);
    index = withEntry(index, entry(P2), t);
    const plan = planUpgrade(m, index, ["hello", "pinned", "gone"]);
    expect(plan.upgrades.map((u) => u.to.outputs.out)).toEqual([P2]);
    expect(plan.skipped).toEqual([
      { name: "pinned", why: "installed as a store path, not by name" },
      { name: "gone", why: "not installed" },
    ]);
    expect(withoutPackages(m, ["hello", "x"])).toMatchObject({ missing: ["x"], packages: [{ name: "pinned" }] });
  });
});
