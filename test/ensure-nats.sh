#!/usr/bin/env bash
# Starts nats-server with JetStream on 127.0.0.1:4222 unless something answers there.
set -euo pipefail
if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  echo "nats: already listening on 127.0.0.1:4222"
  exit 0
fi
dir="${TMPDIR:-/tmp}/tmpnix-farm-nats"
mkdir -p "$dir"
echo "nats: starting nats-server -js on 127.0.0.1:4222 (store $dir)"
nohup nats-server -js -a 127.0.0.1 -p 4222 -sd "$dir" >"$dir/nats.log" 2>&1 &
for _ in $(seq 1 50); do
  if (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then exit 0; fi
  sleep 0.2
done
echo "nats: did not start; see $dir/nats.log" >&2
exit 1
