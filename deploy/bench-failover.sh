#!/usr/bin/env bash
# Leader failover under load on this machine: starts a 3-node collective on loopback, runs
# `collective bench failover` (CLIENTS writers spread over the members; KILLS times: SIGKILL the
# leader, measure the longest gap between acknowledged writes, restart it), then, with
# SPURIOUS_S > 0, a presence load of SPURIOUS_CLIENTS clients for SPURIOUS_S seconds with the
# terms before and after (an election under load without a fault would show as a new term).
# SIGNAL=term stops the leader with SIGTERM instead (a graceful stop: it hands leadership over).
# Stops all it starts; KEEP=1 keeps the members' logs and data.
#   KILLS=20 CLIENTS=64 SPURIOUS_S=120 SPURIOUS_CLIENTS=1000 deploy/bench-failover.sh
#   KILLS=10 SIGNAL=term deploy/bench-failover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
KILLS="${KILLS:-20}"
CLIENTS="${CLIENTS:-64}"
SPURIOUS_S="${SPURIOUS_S:-0}"
SPURIOUS_CLIENTS="${SPURIOUS_CLIENTS:-1000}"
SIGNAL="${SIGNAL:-kill}"
deploy/install-deps.sh
cargo build --bin collective
BIN="$CARGO_TARGET_DIR/debug/collective"
WORK="$(mktemp -d /tmp/collective-failover.XXXXXX)"
cleanup() {
  # The bench restarts killed members itself: stop every member of this run by its data dir.
  pkill -f -- "--data-dir $WORK/" 2>/dev/null || true
  sleep 1
  if [ -n "${KEEP:-}" ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
cluster="1=127.0.0.1:17101,2=127.0.0.1:17102,3=127.0.0.1:17103"
endpoints="127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103"
pids=()
for i in 1 2 3; do
  "$BIN" serve --id "$i" --data-dir "$WORK/node$i" --grpc-addr "127.0.0.1:1710$i" \
    --http-addr "127.0.0.1:1810$i" --initial-cluster "$cluster" \
    --plaintext --no-auth >"$WORK/node$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 120); do
  curl -fs http://127.0.0.1:18101/readyz >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs http://127.0.0.1:18101/readyz >/dev/null || { echo "collective did not become ready" >&2; exit 1; }
"$BIN" --endpoints "$endpoints" bench failover --pids "${pids[0]},${pids[1]},${pids[2]}" \
  --kills "$KILLS" --clients "$CLIENTS" --log-dir "$WORK" --signal "$SIGNAL"
if [ "$SPURIOUS_S" -gt 0 ]; then
  terms() { for p in 17101 17102 17103; do "$BIN" --endpoints "127.0.0.1:$p" -w json cluster status 2>/dev/null | grep -o '"term": *[0-9]*' | head -1; done | tr '\n' ' '; }
  before="$(terms)"
  "$BIN" --endpoints "$endpoints" bench presence --clients "$SPURIOUS_CLIENTS" --duration "$SPURIOUS_S" --warmup 2
  after="$(terms)"
  echo "terms before the load: $before"
  echo "terms after the load:  $after"
  if [ "$before" != "$after" ]; then echo "an election happened under load (no fault was injected)"; fi
fi
