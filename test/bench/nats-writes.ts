// The coordinator's CPU per JetStream write: NatsStore.putDrvs (compare-and-set
// KV puts, 250 in flight, as the persist of a busy runner makes them) against
// the real NATS at 127.0.0.1:4222 (NATS_URL to change it). The baseline is the
// store on a connection opened without NatsStore.connect, so without its patch
// to nats.js (nats-request-patch.ts); each variant runs in its own process
// (the patch is process-wide), alternating, and the ratio is printed.
//
//   node dist/test/bench/nats-writes.js            (BENCH_PUTS, BENCH_ROUNDS)
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { newDrvRecord } from "../../coordinator/core/drv-state.js";
import { NatsStore } from "../../coordinator/store/nats-store.js";

const SERVER = process.env.NATS_URL ?? "127.0.0.1:4222";
const PUTS = Number(process.env.BENCH_PUTS ?? 30_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const VARIANTS = ["stock nats.js (baseline)", "NatsStore.connect (patched)"] as const;

/** One variant in this process: CPU µs (user, system) per put, after a warm-up pass. */
async function measure(variant: (typeof VARIANTS)[number]): Promise<{ userUs: number; systemUs: number; wallMs: number }> {
  const prefix = `bench${randomBytes(4).toString("hex")}-`;
  const patched = variant === VARIANTS[1];
  const nc = patched ? null : await connect({ servers: SERVER, noAsyncTraces: true });
  const store = patched ? await NatsStore.connect(SERVER, { prefix }) : await NatsStore.open(nc!, { prefix });
  try {
    // 5,000 keys written over and over: each put is a compare-and-set on the key's last revision.
    const nix32 = (i: number) => [...i.toString(32).padStart(32, "0")].map((d) => "0123456789abcdfghijklmnpqrsvwxyz"[parseInt(d, 32)]).join("");
    const records = Array.from({ length: 5_000 }, (_, i) => newDrvRecord(`/tmp/nix/store/${nix32(i)}-bench-${i}.drv`, i));
    const pass = async () => {
      for (let done = 0; done < PUTS; done += records.length) await store.putDrvs(records.slice(0, Math.min(records.length, PUTS - done)));
    };
    await pass();
    const cpu = process.cpuUsage();
    const started = performance.now();
    await pass();
    const used = process.cpuUsage(cpu);
    return { userUs: used.user / PUTS, systemUs: used.system / PUTS, wallMs: performance.now() - started };
  } finally {
    await store.destroy();
    await store.close();
    await nc?.close();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const child = process.argv[2];
  if (child !== undefined) {
    process.stdout.write(JSON.stringify(await measure(VARIANTS[Number(child)])));
    return;
  }
  const results = VARIANTS.map(() => [] as { userUs: number; systemUs: number; wallMs: number }[]);
  for (let round = 0; round < ROUNDS; round++) {
    for (let v = 0; v < VARIANTS.length; v++) {
      results[v].push(JSON.parse(execFileSync(process.execPath, [fileURLToPath(import.meta.url), String(v)], { encoding: "utf8" })));
    }
  }
  console.log(`${PUTS} compare-and-set KV puts per run, ${ROUNDS} runs of each, alternating (medians):\n`);
  console.log("| variant | CPU µs per put: user / system | wall ms | user CPU vs baseline |");
  console.log("| --- | --- | --- | --- |");
  const base = median(results[0].map((r) => r.userUs));
  VARIANTS.forEach((name, v) => {
    const user = median(results[v].map((r) => r.userUs));
    console.log(`| ${name} | ${user.toFixed(1)} / ${median(results[v].map((r) => r.systemUs)).toFixed(1)} | ${median(results[v].map((r) => r.wallMs)).toFixed(0)} | ${(user / base).toFixed(2)}× |`);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
