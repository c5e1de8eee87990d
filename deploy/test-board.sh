#!/usr/bin/env bash
# The supervisor board in a real browser: starts a 3-member cluster of the built binary (with an
# administrator token), loads two sites, two users and two workgroups, and runs
# deploy/test-board.cjs (playwright-core driving Debian's headless chromium) against a follower's
# board. Screenshots go to $OUT (default: a temporary directory, printed). deploy/install-deps.sh
# --test installs chromium and playwright-core.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
BIN="$CARGO_TARGET_DIR/debug/collective"
say() { echo "== board: $*" >&2; }
dir=$(mktemp -d /tmp/collective-board.XXXXXX)
OUT="${OUT:-$dir/screenshots}"
mkdir -p "$OUT"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir/node1" "$dir/node2" "$dir/node3"
}
trap cleanup EXIT
fail() { say "FAILED: $*"; for log in "$dir"/node*.log; do tail -5 "$log" >&2; done; exit 1; }

read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
cluster="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
endpoints="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
token="board-test-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$token" >"$dir/admin.token"
for id in 1 2 3; do
    "$BIN" --log-format json serve --id "$id" --data-dir "$dir/node$id" \
        --grpc-addr "127.0.0.1:${ports[$((id - 1))]}" --http-addr "127.0.0.1:${ports[$((id + 2))]}" \
        --initial-cluster "$cluster" --plaintext --admin-token-file "$dir/admin.token" >"$dir/node$id.log" 2>&1 &
    pids+=($!)
done
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:${ports[3]}/readyz" >/dev/null 2>&1 && break
    sleep 0.2
done
c() { "$BIN" --endpoints "$endpoints" --token-file "$dir/admin.token" "$@" >/dev/null; }
export COLLECTIVE_SITE_PASSWORD=board-site-password
c site add --id 1 --name Indianapolis --phone "+1 317 555 0100"
c site add --id 2 --name Paris --phone "+33 1 55 55 01 00"
c workgroup add Support
c workgroup add Sales
c user add --username ada --display-name "Ada Lovelace" --email ada@example.com --home-site 1 --extension 1100
c user add --username bob --display-name "Bob Noyce" --email bob@example.com --home-site 2 --extension 2100
c workgroup add-member Support ada
c user logon ada --site 1
leader=$("$BIN" --endpoints "$endpoints" --token-file "$dir/admin.token" -w json cluster status |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["leader_id"])')
[ "$leader" -ge 1 ] || fail "no leader"
board=$((leader % 3 + 1))
say "member $leader leads; the browser watches member $board's board"

BOARD_URL="http://127.0.0.1:${ports[$((board + 2))]}/board" BIN="$BIN" ENDPOINTS="$endpoints" \
    TOKEN_FILE="$dir/admin.token" TOKEN="$token" LEADER_PID="${pids[$((leader - 1))]}" OUT="$OUT" \
    NODE_PATH=/var/tmp/collective-board-test/node_modules node deploy/test-board.cjs || fail "the browser test"
for id in 1 2 3; do
    if grep -q "$token" "$dir/node$id.log"; then fail "member $id logged the token"; fi
done
say "screenshots in $OUT"
