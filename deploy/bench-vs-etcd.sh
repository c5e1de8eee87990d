#!/usr/bin/env bash
# Side by side on this machine: a 3-member etcd and a 3-node collective on loopback, both
# fsyncing before they acknowledge, loaded by the same tool (`collective bench WORKLOAD --target
# collective|etcd`) at 1, 64 and 1,000 clients, alternating: `presence` (the same write shape:
# one put of a serialized presence record per change, one unary call each), `presence-stream`
# (collective's changes over its `Presences/Submit` streams, `bench presence --api stream`, each
# still a write of its own answered on its own; etcd has no streamed put, so its row is its unary
# presence again, measured alongside) and `read` (linearizable gets, etcd's default). Prints one
# table of medians over RUNS runs with the ratio collective/etcd, and the CPU per request of each
# system's members plus the bench (`bench --cpu-of`). Stops all it starts. SEND_TO=leader
# (default) sends both systems' writes to their leader, SEND_TO=all spreads them over the
# members, whose followers hand them on (`bench presence --send-to`). TRANSPORT=h2 (default)
# sends both systems' unary calls straight over HTTP/2 connections, TRANSPORT=tonic through
# tonic's channel and etcd-client's, which cost the bench about twice the CPU per call on the
# cores it shares with the members, and etcd-client more than ours (`bench presence
# --transport`, `bench read --transport`).
#   RUNS=3 DURATION=10 CLIENTS="1 64 1000" WORKLOADS="presence presence-stream read" deploy/bench-vs-etcd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-1 64 1000}"
WORKLOADS="${WORKLOADS:-presence presence-stream read}"
SEND_TO="${SEND_TO:-leader}"
TRANSPORT="${TRANSPORT:-h2}"
deploy/install-deps.sh
if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server
fi
cargo build --bin collective
BIN="$CARGO_TARGET_DIR/debug/collective"
WORK="$(mktemp -d /tmp/collective-vs-etcd.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

peers="e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$WORK/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${i}2379" --advertise-client-urls "http://127.0.0.1:${i}2379" \
    --listen-peer-urls "http://127.0.0.1:${i}2380" --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" \
    --initial-cluster "$peers" --initial-cluster-state new --logger zap --log-level warn \
    >"$WORK/etcd$i.log" 2>&1 &
  pids+=($!)
done
etcd_pids="${pids[0]},${pids[1]},${pids[2]}"
cluster="1=127.0.0.1:17001,2=127.0.0.1:17002,3=127.0.0.1:17003"
for i in 1 2 3; do
  "$BIN" serve --id "$i" --data-dir "$WORK/collective$i" --grpc-addr "127.0.0.1:1700$i" \
    --http-addr "127.0.0.1:1800$i" --initial-cluster "$cluster" \
    --plaintext --no-auth >"$WORK/collective$i.log" 2>&1 &
  pids+=($!)
done
collective_pids="${pids[3]},${pids[4]},${pids[5]}"
for _ in $(seq 1 120); do
  if curl -fs http://127.0.0.1:18001/readyz >/dev/null 2>&1 && curl -fs http://127.0.0.1:12379/health >/dev/null 2>&1; then break; fi
  sleep 0.5
done
curl -fs http://127.0.0.1:18001/readyz >/dev/null || { echo "collective did not become ready" >&2; exit 1; }
curl -fs http://127.0.0.1:12379/health >/dev/null || { echo "etcd did not become ready" >&2; exit 1; }

collective_endpoints="127.0.0.1:17001,127.0.0.1:17002,127.0.0.1:17003"
etcd_endpoints="http://127.0.0.1:12379,http://127.0.0.1:22379,http://127.0.0.1:32379"
results="$WORK/results.jsonl"
for run in $(seq 1 "$RUNS"); do
  for workload in $WORKLOADS; do
    for clients in $CLIENTS; do
      for target in collective etcd; do
        endpoints="$collective_endpoints"; members="$collective_pids"
        [ "$target" = etcd ] && endpoints="$etcd_endpoints" && members="$etcd_pids"
        echo "run $run: $workload, $target, $clients clients" >&2
        # The bench's workload and options; rows are labelled with this script's workload name.
        case "$workload" in
          presence) command=(presence --send-to "$SEND_TO" --transport "$TRANSPORT") ;;
          presence-stream) command=(presence --send-to "$SEND_TO")
            if [ "$target" = collective ]; then command+=(--api stream); else command+=(--transport "$TRANSPORT"); fi ;;
          read) command=(read --transport "$TRANSPORT") ;;
          *) command=("$workload") ;;
        esac
        "$BIN" --endpoints "$endpoints" -w json bench "${command[@]}" --target "$target" --clients "$clients" \
          --duration "$DURATION" --warmup 2 --cpu-of "$members" \
          | python3 -c 'import json,sys; r=json.load(sys.stdin); r["workload"]=sys.argv[1]; print(json.dumps(r))' "$workload" >>"$results"
        tail -n 1 "$results" | python3 -c 'import json,sys; r=json.load(sys.stdin); c=r["cpu_us_per_request"]; m=sum(v for k, v in c.items() if k != "self"); print("  %.0f ops/s, p99 %.2f ms, CPU per request: members %.1f us, bench %.1f us" % (r["throughput_per_s"], r["p99_ms"], m, c.get("self", 0)), file=sys.stderr)'
      done
    done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def cpu(r):
    # Members' and the bench's CPU per request (µs): steadier than throughput on a shared host.
    return sum(r.get("cpu_us_per_request", {}).values()) or float("nan")
def median(workload, target, clients, key):
    values = [key(r) if callable(key) else r[key] for r in rows
              if r["workload"] == workload and r["target"] == target and r["clients"] == clients]
    return statistics.median(values) if values else float("nan")
print(f"{'workload':>15}  {'clients':>7}  {'collective ops/s':>16}  {'etcd ops/s':>10}  {'ratio':>5}  {'collective p99 ms':>17}  {'etcd p99 ms':>11}  {'errors':>6}  {'CPU us/req collective':>21}  {'etcd':>5}")
for workload in sorted({r["workload"] for r in rows}):
    for clients in sorted({r["clients"] for r in rows if r["workload"] == workload}):
        c, e = median(workload, "collective", clients, "throughput_per_s"), median(workload, "etcd", clients, "throughput_per_s")
        errors = sum(sum(r["errors"].values()) for r in rows if r["workload"] == workload and r["clients"] == clients)
        cp, ep = median(workload, "collective", clients, "p99_ms"), median(workload, "etcd", clients, "p99_ms")
        cc, ec = median(workload, "collective", clients, cpu), median(workload, "etcd", clients, cpu)
        print(f"{workload:>15}  {clients:>7}  {c:>16.0f}  {e:>10.0f}  {c / e:>5.2f}  {cp:>17.2f}  {ep:>11.2f}  {errors:>6}  {cc:>21.1f}  {ec:>5.1f}")
runs = len({(r["workload"], r["target"], r["clients"]) for r in rows})
print(f"(medians of {len(rows) // max(1, runs)} runs; same machine, loopback, both fsync before acknowledging)")
PY
