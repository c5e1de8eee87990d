#!/usr/bin/env bash
# Scale on this machine: a fresh 3-node collective on loopback (plaintext, no auth) is filled by
# `collective bench load` (SITES sites, their workgroups, USERS users with skills and a workgroup
# each), then the script measures, per member:
#   - resident memory after the load and after a snapshot,
#   - the snapshot's size and the time to take it (`collective cluster snapshot`),
#   - restart-to-serving: a follower killed with SIGKILL and started again, until /readyz,
#   - snapshot install: a follower removed, its data directory wiped, added back (`member add`
#     returns once it has caught up; the leader's log is compacted, so it receives the snapshot).
# Everything it starts, it stops.
#   SITES=999 USERS=1000000 deploy/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
SITES="${SITES:-999}"
USERS="${USERS:-1000000}"
deploy/install-deps.sh
cargo build --bin collective
BIN="$CARGO_TARGET_DIR/debug/collective"
WORK="$(mktemp -d /tmp/collective-scale.XXXXXX)"
declare -A pids=()
cleanup() {
  for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cluster="1=127.0.0.1:17101,2=127.0.0.1:17102,3=127.0.0.1:17103"
endpoints="127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103"
start() {
  local i="$1"
  "$BIN" serve --id "$i" --data-dir "$WORK/node$i" --grpc-addr "127.0.0.1:1710$i" \
    --http-addr "127.0.0.1:1810$i" --initial-cluster "$cluster" \
    --plaintext --no-auth >>"$WORK/node$i.log" 2>&1 &
  pids[$i]=$!
}
# Seconds (with ms) until member $1 answers /readyz, at most 600 s.
until_ready() {
  local started now
  started=$(date +%s.%N)
  for _ in $(seq 1 6000); do
    if curl -fs "http://127.0.0.1:1810$1/readyz" >/dev/null 2>&1; then
      now=$(date +%s.%N)
      python3 -c "print(round($now - $started, 2))"
      return 0
    fi
    sleep 0.1
  done
  echo "member $1 not ready within 600 s" >&2
  return 1
}
member() { "$BIN" --endpoints "127.0.0.1:1710$1" --timeout-ms 130000 "${@:2}"; }

for i in 1 2 3; do start "$i"; done
for i in 1 2 3; do until_ready "$i" >/dev/null; done

"$BIN" --endpoints "$endpoints" bench load --sites "$SITES" --users "$USERS"

leader=$(member 1 -w json cluster status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader_id"])')
followers=()
for i in 1 2 3; do [ "$i" = "$leader" ] || followers+=("$i"); done
echo
echo "== snapshot on every member (leader is $leader)"
for i in 1 2 3; do member "$i" cluster snapshot; done
echo
echo "== after the snapshots"
"$BIN" --endpoints "$endpoints" -w json cluster status >/dev/null
for i in 1 2 3; do
  member "$i" -w json cluster status | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("member %s %-9s users %s  RSS %.0f MiB  heap %.0f MiB  snapshot %.1f MiB  build %s ms" % (s["id"], s["state"], s.get("users", 0),
      int(s.get("resident_memory_bytes", 0)) / 2**20, int(s.get("heap_allocated_bytes", 0)) / 2**20, int(s.get("snapshot_bytes", 0)) / 2**20, s.get("snapshot_build_ms", 0)))'
done

restart="${followers[0]}"
echo
echo "== restart-to-serving: member $restart killed (SIGKILL) and started again"
kill -9 "${pids[$restart]}"; wait "${pids[$restart]}" 2>/dev/null || true
start "$restart"
took=$(until_ready "$restart")
echo "member $restart serving after $took s"
member "$restart" -w json cluster status | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("member %s users %s  RSS %.0f MiB after the restart" % (s["id"], s.get("users", 0), int(s.get("resident_memory_bytes", 0)) / 2**20))'

wiped="${followers[1]}"
echo
echo "== snapshot install: member $wiped removed, its data directory wiped, added back as a new member"
# A member that lost its data rejoins as a new member (as in etcd): Raft must not see a voter's
# log go back.
member "$leader" member remove "$wiped" >/dev/null
kill -9 "${pids[$wiped]}"; wait "${pids[$wiped]}" 2>/dev/null || true
rm -rf "$WORK/node$wiped"
start "$wiped"
added=$(date +%s.%N)
member "$leader" member add "$wiped" "127.0.0.1:1710$wiped" >/dev/null
now=$(date +%s.%N)
echo "member $wiped caught up from the snapshot (member add returned) after $(python3 -c "print(round($now - $added, 2))") s"
member "$leader" member promote "$wiped" >/dev/null
took=$(until_ready "$wiped")
echo "member $wiped serving after $took s more"
member "$wiped" -w json cluster status | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("member %s users %s  RSS %.0f MiB  snapshot %.1f MiB  install %s ms" % (s["id"], s.get("users", 0),
      int(s.get("resident_memory_bytes", 0)) / 2**20, int(s.get("snapshot_bytes", 0)) / 2**20, s.get("snapshot_install_ms", 0)))'
