#!/usr/bin/env bash
# The whole farm on one Debian machine, end to end:
#   1. installs what is missing (nix-bin, nats-server, zstd, ...; npm ci; build),
#   2. starts NATS with JetStream if nothing answers on 127.0.0.1:4222,
#   3. starts a coordinator with its signed binary cache,
#   4. starts 3 workers, each in its own mount namespace with its own empty
#      /tmp/nix and a memory cgroup (like 3 separate small containers),
#   5. submits the bundled demo DAG (12 derivations) and follows it,
#   6. installs the result as an unprivileged user (nobody) in a fresh
#      namespace where /tmp/nix is empty and /nix is hidden, once with stock
#      nix-store and once by name with `farm install demo` (no Nix, only the
#      cache URL and key), and runs it.
# Run as root (namespaces, cgroups and the user switch need it):
#   sudo bash deploy/local/demo.sh          (KEEP=1 leaves the farm running)
# FARM_DEMO_PORTS="GRPC CACHE METRICS" (default "7420 7421 9464") moves the farm's
# ports, FARM_DEMO_NATS_PREFIX names its NATS state (default demo<pid>-), and
# FARM_DEMO_CLEAN=1 removes its files at the end (the test does, and deletes the prefix).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates namespaces and cgroups): sudo bash $0" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
need=()
command -v nix-store   >/dev/null || need+=(nix-bin)
command -v nats-server >/dev/null || need+=(nats-server)
command -v zstd        >/dev/null || need+=(zstd)
command -v xz          >/dev/null || need+=(xz-utils)
command -v cc          >/dev/null || need+=(gcc libc6-dev)
command -v node        >/dev/null || need+=(nodejs npm)
if ((${#need[@]})); then
  echo "demo: installing ${need[*]}"
  apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
[ "${FARM_DEMO_NO_BUILD:-}" = 1 ] || npm run -s build
bash test/ensure-nats.sh

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/tmpnix-demo-XXXXXX")
chmod 755 "$ROOT"
read -r GRPC_PORT CACHE_PORT METRICS_PORT <<<"${FARM_DEMO_PORTS:-7420 7421 9464}"
NATS_PREFIX=${FARM_DEMO_NATS_PREFIX:-demo$$-}
TOKEN=demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export FARM_TOKEN=$TOKEN FARM_COORDINATOR=127.0.0.1:$GRPC_PORT
FARM="node $REPO/dist/coordinator/cli/main.js"
PIDS=()
CGROUP=/sys/fs/cgroup/memory/tmpnix-demo-$$
cleanup() {
  if [ "${KEEP:-}" = 1 ]; then echo "demo: farm left running (files in $ROOT)"; return; fi
  for p in $(cat "$CGROUP"/*/cgroup.procs 2>/dev/null) "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  sleep 0.5; rmdir "$CGROUP"/*/tmpnix-build-* "$CGROUP"/* "$CGROUP" 2>/dev/null || true
  if [ "${FARM_DEMO_CLEAN:-}" = 1 ]; then
    chmod -R u+w "$ROOT" 2>/dev/null; rm -rf "$ROOT"
    echo "demo: stopped; its files are removed (NATS prefix $NATS_PREFIX kept)"
  else
    echo "demo: stopped; logs and cache are in $ROOT"
  fi
}
trap cleanup EXIT

# An isolated "container": own mount namespace, own /tmp/nix, own memory cgroup
# (deploy/local/isolate.sh; it fails loudly if any step of that fails).
isolated() { # name memory-bytes nix-dir cmd...
  local name=$1 mem=$2 dir=$3; shift 3
  mkdir -p "$CGROUP/$name" "$dir"
  echo "$mem" > "$CGROUP/$name/memory.limit_in_bytes"
  bash deploy/local/isolate.sh --nix-dir "$dir" --cgroup "$CGROUP/$name" -- "$@"
}

echo "demo: starting the coordinator and its cache (logs: $ROOT/coordinator.log)"
$FARM coordinator --data-dir="$ROOT/coordinator" --nats-prefix="$NATS_PREFIX" \
  --listen="127.0.0.1:$GRPC_PORT" --cache-listen="127.0.0.1:$CACHE_PORT" --metrics-listen="127.0.0.1:$METRICS_PORT" >"$ROOT/coordinator.log" 2>&1 &
PIDS+=($!); disown
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$GRPC_PORT) 2>/dev/null && break; sleep 0.1; done
PUBKEY=$(cat "$ROOT/coordinator/signing-key.pub")
echo "demo: cache at http://127.0.0.1:$CACHE_PORT, signed by $PUBKEY"

for w in 1 2 3; do
  COORDINATOR_URL=$FARM_COORDINATOR FARM_WORKER_ID=demo-worker-$w \
    isolated "worker-$w" $((768 * 1024 * 1024)) "$ROOT/worker-$w/nix" node "$REPO/dist/worker/main.js" >"$ROOT/worker-$w.log" 2>&1 &
  PIDS+=($!); disown
done
for _ in $(seq 1 100); do [ "$($FARM workers --json | grep -c '"state": "active"')" -ge 3 ] && break; sleep 0.3; done
$FARM workers

echo "demo: submitting test/fixtures/demo/default.nix#demo from a submitter with its own /tmp/nix"
isolated submitter $((1024 * 1024 * 1024)) "$ROOT/submitter/nix" $FARM submit "$REPO/test/fixtures/demo/default.nix#demo" --follow
OUT=$($FARM status --json | node -e 'const j=JSON.parse(require("fs").readFileSync(0));console.log(j.at(-1).outputs[0].outputs.out)')

USERBOX=$ROOT/user; mkdir -p "$USERBOX/nix-stock" "$USERBOX/nix-farm" "$USERBOX/home" "$USERBOX/conf" "$USERBOX/repo"; chown -R 65534:65534 "$USERBOX"
printf 'build-users-group =\nsubstituters = http://127.0.0.1:%s\ntrusted-public-keys = %s\n' "$CACHE_PORT" "$PUBKEY" > "$USERBOX/conf/nix.conf"
as_nobody() { # nix-dir PATH script
  # The checkout is bind-mounted at $USERBOX/repo: its own parent dirs may be closed to nobody.
  bash deploy/local/isolate.sh --nix-dir "$1" --hide-nix --expose "$REPO:$USERBOX/repo" --uid 65534 -- \
    /usr/bin/env -i PATH="$2" HOME="$USERBOX/home" USER=nobody /bin/sh -c "$3"
}
echo "demo: as user nobody, stock nix-store -r from the farm's cache:"
as_nobody "$USERBOX/nix-stock" /usr/bin:/bin "NIX_CONF_DIR=$USERBOX/conf NIX_STORE_DIR=/tmp/nix/store NIX_STATE_DIR=/tmp/nix/var/nix NIX_LOG_DIR=/tmp/nix/var/log/nix nix-store -r $OUT >/dev/null && $OUT/bin/tmpnix-demo"
# The farm published the job under its attribute name in the signed package index.
CACHE_URL=http://127.0.0.1:$CACHE_PORT
for _ in $(seq 1 50); do $FARM search demo --cache-url "$CACHE_URL" --trusted-key "$PUBKEY" >/dev/null 2>&1 && break; sleep 0.2; done
echo "demo: as user nobody, 'farm install demo' with only the cache URL and key (no Nix, no coordinator, no token):"
mkdir -p "$USERBOX/bin"; ln -sf "$(command -v node)" "$USERBOX/bin/node"
as_nobody "$USERBOX/nix-farm" "$USERBOX/bin" "export FARM_CACHE_URL=$CACHE_URL FARM_TRUSTED_KEYS=$PUBKEY; farm() { node $USERBOX/repo/dist/coordinator/cli/main.js \"\$@\"; }; farm install demo && farm list && ~/.local/share/tmpnix/profile/bin/tmpnix-demo"
echo "demo: done"
