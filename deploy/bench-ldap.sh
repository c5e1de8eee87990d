#!/usr/bin/env bash
# The directory source at scale, on this machine: a real OpenLDAP server (slapd, from a temporary
# directory) holding ENTRIES inetOrgPerson entries over SITES sites, and a fresh 3-member
# collective on loopback (plaintext, no auth). The script times, through `collective source ldap
# sync-now` (which waits for the poll's report):
#   1. the first poll (every entry becomes a user),
#   2. a poll with no change,
#   3. a poll after 1 % of the entries changed their display name,
# then the presence throughput (`collective bench presence`, CLIENTS clients, DURATION s) without
# a poll and with polls running back to back, and their ratio. Everything it starts, it stops.
#   ENTRIES=100000 deploy/bench-ldap.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
ENTRIES="${ENTRIES:-100000}"
SITES="${SITES:-10}"
CLIENTS="${CLIENTS:-64}"
DURATION="${DURATION:-10}"
deploy/install-deps.sh --test
cargo build --bin collective
BIN="$CARGO_TARGET_DIR/debug/collective"
WORK="$(mktemp -d /tmp/collective-bench-ldap.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { echo "== bench-ldap: $*" >&2; }
BASE="dc=example,dc=com"
ADMIN="cn=admin,$BASE"
echo "bench-password" >"$WORK/bind-password"

say "generating $ENTRIES entries over $SITES sites"
mkdir -p "$WORK/db"
cat >"$WORK/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $WORK/slapd.pid
sizelimit unlimited
database mdb
suffix "$BASE"
rootdn "$ADMIN"
rootpw bench-password
directory $WORK/db
maxsize 4294967296
EOF
python3 - "$ENTRIES" "$SITES" >"$WORK/entries.ldif" <<'EOF'
import sys
entries, sites = int(sys.argv[1]), int(sys.argv[2])
base = "dc=example,dc=com"
print(f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n")
for s in range(1, sites + 1):
    print(f"dn: ou=site{s},{base}\nobjectClass: organizationalUnit\nou: site{s}\n")
for i in range(entries):
    s = i % sites + 1
    print(f"dn: uid=u{i},ou=site{s},{base}\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: User {i}\nsn: {i}\n"
          f"mail: u{i}@example.com\ntelephoneNumber: {2000000 + i}\n")
EOF
slapadd -q -f "$WORK/slapd.conf" -l "$WORK/entries.ldif"
LDAP_PORT=17389
slapd -f "$WORK/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" -d 0 >"$WORK/slapd.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  ldapsearch -x -H "ldap://127.0.0.1:$LDAP_PORT" -b "" -s base >/dev/null 2>&1 && break
  sleep 0.1
done

say "starting a 3-member collective"
cluster="1=127.0.0.1:17201,2=127.0.0.1:17202,3=127.0.0.1:17203"
export COLLECTIVE_ENDPOINTS="127.0.0.1:17201,127.0.0.1:17202,127.0.0.1:17203"
for i in 1 2 3; do
  "$BIN" serve --id "$i" --data-dir "$WORK/node$i" --grpc-addr "127.0.0.1:1720$i" \
    --http-addr "127.0.0.1:1730$i" --initial-cluster "$cluster" --plaintext --no-auth \
    >"$WORK/node$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:17301/readyz >/dev/null 2>&1 && break; sleep 0.2; done
export COLLECTIVE_SITE_PASSWORD=bench-site-password
for s in $(seq 1 "$SITES"); do
  "$BIN" site add --id "$s" --name "site$s" --phone "+1 555 01$(printf %02d "$s")" >/dev/null
done
# Polled only when asked: the next polling time is a year away.
"$BIN" source ldap set --url "ldap://127.0.0.1:$LDAP_PORT" --bind-dn "$ADMIN" \
  --bind-password-file "$WORK/bind-password" --base-dn "$BASE" --interval-s 604800 \
  --next-polling-time "$(date -u -d '+1 year' +%Y-%m-%dT%H:%M:%SZ)" >/dev/null

# One poll through the CLI: prints "wall_s poll_ms seen created updated removed refused".
poll() {
  local started ended report
  started=$(date +%s.%N)
  report=$("$BIN" -w json source ldap sync-now)
  ended=$(date +%s.%N)
  python3 -c '
import json, sys
poll = json.loads(sys.argv[1])["last_poll"]
wall = float(sys.argv[3]) - float(sys.argv[2])
counts = ", ".join(f"{key} {poll[key]}" for key in ["seen", "created", "updated", "removed", "refused"])
duration = poll["duration_ms"]
print(f"{wall:.2f} s wall, {duration} ms poll: {counts}")' "$report" "$started" "$ended"
}
first=$(poll)
say "first poll: $first"
unchanged=$(poll)
say "no change: $unchanged"
changes=$((ENTRIES / 100))
python3 - "$changes" "$SITES" >"$WORK/changes.ldif" <<'EOF'
import sys
changes, sites = int(sys.argv[1]), int(sys.argv[2])
for i in range(changes):
    print(f"dn: uid=u{i},ou=site{i % sites + 1},dc=example,dc=com\nchangetype: modify\nreplace: cn\ncn: Renamed {i}\n")
EOF
ldapmodify -x -H "ldap://127.0.0.1:$LDAP_PORT" -D "$ADMIN" -w bench-password -f "$WORK/changes.ldif" >/dev/null
one_percent=$(poll)
say "1 % changed: $one_percent"

presence() {
  "$BIN" -w json bench presence --clients "$CLIENTS" --duration "$DURATION" |
    python3 -c 'import json, sys; print(round(json.load(sys.stdin)["throughput_per_s"]))'
}
say "presence, $CLIENTS clients, without a poll"
quiet=$(presence)
say "presence, $CLIENTS clients, with polls back to back"
( while true; do "$BIN" source ldap sync-now >/dev/null 2>&1 || true; done ) &
poller=$!
pids+=($poller)
busy=$(presence)
kill "$poller" 2>/dev/null || true
polls=$("$BIN" -w json source ldap status | python3 -c 'import json, sys; print(json.load(sys.stdin)["last_poll"]["duration_ms"])')

cat <<EOF

directory source, $ENTRIES entries, $SITES sites (deploy/bench-ldap.sh)
  first poll          $first
  no change           $unchanged
  1 % changed         $one_percent
  presence ops/s      $quiet without a poll, $busy with polls back to back (each ~$polls ms): ratio $(python3 -c "print(f'{$busy / $quiet:.2f}')")
EOF
