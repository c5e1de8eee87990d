#!/usr/bin/env bash
# The supervisors' board feed under load on this machine: starts a 3-node collective on
# loopback and runs `collective bench board`: ROUNDS rounds, each a presence load of CLIENTS
# clients for DURATION seconds without boards, then the same with BOARDS live board feeds open
# (spread over the three members' HTTP ports) and a probe change PROBE_RATE times a second.
# Prints each phase, the throughput ratio (with / without boards) and the probe's latency to the
# boards, and the CPU per write of the bench and of each member. Stops all it starts; KEEP=1 keeps the members' logs and data.
#   deploy/bench-board.sh
#   BOARDS=100 CLIENTS=64 DURATION=10 ROUNDS=3 deploy/bench-board.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
BOARDS="${BOARDS:-100}"
CLIENTS="${CLIENTS:-64}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
PROBE_RATE="${PROBE_RATE:-20}"
deploy/install-deps.sh
cargo build --bin collective
BIN="$CARGO_TARGET_DIR/debug/collective"
WORK="$(mktemp -d /tmp/collective-board-bench.XXXXXX)"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cluster="1=127.0.0.1:17201,2=127.0.0.1:17202,3=127.0.0.1:17203"
endpoints="127.0.0.1:17201,127.0.0.1:17202,127.0.0.1:17203"
for i in 1 2 3; do
  "$BIN" serve --id "$i" --data-dir "$WORK/node$i" --grpc-addr "127.0.0.1:1720$i" \
    --http-addr "127.0.0.1:1820$i" --initial-cluster "$cluster" \
    --plaintext --no-auth >"$WORK/node$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 120); do
  curl -fs http://127.0.0.1:18201/readyz >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs http://127.0.0.1:18201/readyz >/dev/null || { echo "collective did not become ready" >&2; exit 1; }
"$BIN" --endpoints "$endpoints" bench board --clients "$CLIENTS" --duration "$DURATION" \
  --boards "$BOARDS" --rounds "$ROUNDS" --probe-rate "$PROBE_RATE" \
  --cpu-of "$(IFS=,; echo "${pids[*]}")" \
  --board-urls "http://127.0.0.1:18201,http://127.0.0.1:18202,http://127.0.0.1:18203"
