#!/usr/bin/env bash
# Starts a 3-node collective on 127.0.0.1 with demo data, and prints how to use it. The nodes talk
# mutual TLS (a demo CA in deploy/.cluster/pki) and require credentials: the CLI uses the
# administrator token, each site's lease keeper its site certificate.
#   deploy/local-cluster.sh          start (building first), load demo data once
#   deploy/local-cluster.sh stop     stop the nodes (data stays in deploy/.cluster)
#   deploy/local-cluster.sh clean    stop and delete the data
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
DIR="deploy/.cluster"
BIN="$CARGO_TARGET_DIR/debug/collective"
ENDPOINTS="127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
CLUSTER="1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"

stop() {
  # The sites' lease keepers first (each revokes its lease as it stops), then the nodes.
  for pidfile in "$DIR"/lease*.pid "$DIR"/node*.pid; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
  done
  sleep 0.5
}

case "${1:-start}" in
  stop) stop; echo "stopped"; exit 0 ;;
  clean) stop; rm -rf "$DIR"; echo "stopped and cleaned"; exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|clean]" >&2; exit 2 ;;
esac

deploy/install-deps.sh
cargo build --bin collective
mkdir -p "$DIR"
stop
PKI="$DIR/pki"
if [ ! -f "$PKI/ca.pem" ]; then
  "$BIN" certs generate --ca "$PKI" --node n1 --node n2 --node n3 --site 1 --site 2 --site 3 --admin demo >/dev/null
fi
if [ ! -f "$DIR/admin.token" ]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/admin.token")
fi
for id in 1 2 3; do
  nohup "$BIN" serve --id "$id" --data-dir "$DIR/node$id" --grpc-addr "127.0.0.1:700$id" \
    --http-addr "127.0.0.1:800$id" --initial-cluster "$CLUSTER" \
    --tls-cert-file "$PKI/node-n$id.pem" --tls-key-file "$PKI/node-n$id.key" --tls-ca-file "$PKI/ca.pem" \
    --admin-token-file "$DIR/admin.token" >"$DIR/node$id.log" 2>&1 &
  echo $! >"$DIR/node$id.pid"
done

export COLLECTIVE_ENDPOINTS="$ENDPOINTS" COLLECTIVE_CACERT="$PKI/ca.pem" COLLECTIVE_TOKEN_FILE="$DIR/admin.token"
c() { "$BIN" "$@"; }
echo -n "waiting for a leader"
for _ in $(seq 1 120); do
  if curl -fs http://127.0.0.1:8001/readyz >/dev/null 2>&1; then break; fi
  echo -n "."; sleep 0.5
done
echo
curl -fs http://127.0.0.1:8001/readyz >/dev/null || { echo "cluster did not become ready; see $DIR/node*.log" >&2; exit 1; }

if [ ! -f "$DIR/demo-loaded" ]; then
  echo "loading demo data (3 sites, 60 users, a spanning workgroup, routing)"
  export COLLECTIVE_SITE_PASSWORD=demo-password
  c site add --id 1 --name Indianapolis --phone "+1 317 555 0100" --server indy-cic1 >/dev/null
  c site add --id 2 --name "Boca Raton" --phone "+1 561 555 0100" --server boca-cic1 >/dev/null
  c site add --id 3 --name Paris --phone "+33 1 55 55 01 00" --server paris-cic1 >/dev/null
fi

# Each site is "connected": a keeper holds its lease alive (its agents can take calls) until
# `stop`. Started before users log on, so an expired lease from a previous run logs nobody off.
# Each keeper authenticates as its site (its certificate), not as the administrator.
for site in 1 2 3; do
  env -u COLLECTIVE_TOKEN_FILE nohup "$BIN" --cert "$PKI/site-$site.pem" --key "$PKI/site-$site.key" \
    site lease "$site" --ttl-ms 10000 >"$DIR/lease$site.log" 2>&1 &
  echo $! >"$DIR/lease$site.pid"
done
sleep 1

if [ ! -f "$DIR/demo-loaded" ]; then
  c workgroup add Support --spans-sites --skill english=50 >/dev/null
  c workgroup add Sales >/dev/null
  names=(ada alan grace linus ken dennis barbara edsger donald john margaret tim vint radia bjarne guido james niklaus frances leslie)
  for site in 1 2 3; do
    for i in $(seq 0 19); do
      user="${names[$i]}.s$site"
      c user add --username "$user" --display-name "${names[$i]^} (site $site)" --email "$user@example.com" \
        --home-site "$site" --extension "$site$(printf %03d $((100 + i)))" --skill "english=$((40 + i * 3))" >/dev/null
      if [ $((i % 4)) -eq 0 ]; then c workgroup add-member Support "$user" >/dev/null; fi
      if [ $((i % 5)) -eq 1 ]; then c workgroup add-member Sales "$user" >/dev/null; fi
      if [ $((i % 2)) -eq 0 ]; then c user logon "$user" --site "$site" >/dev/null; fi
    done
  done
  # ada.s1 (spanning, home Indianapolis) roams to Paris and goes to lunch.
  c user logon ada.s1 --site 3 >/dev/null
  c status set ada.s1 "At Lunch" --until-minutes 45 --detail "back soon" >/dev/null
  # Support prefers the caller's site unless an agent elsewhere has waited 30 s longer; a call
  # from Paris is routed and taken.
  c route settings Support --local-margin-ms 30000 --reservation-ttl-ms 20000 >/dev/null
  c route cost --from 3 --to 2 10000 >/dev/null
  c route call --id demo-call-1 --origin 3 --workgroup Support --skill english=60 >/dev/null
  c route accept demo-call-1 >/dev/null
  touch "$DIR/demo-loaded"
else
  # A restart: the keepers' fresh leases found the users logged off (leases expired while the
  # cluster was down); log the demo agents back on.
  for site in 1 2 3; do
    for name in ada grace ken barbara donald margaret vint bjarne james frances; do
      c user logon "$name.s$site" --site "$site" >/dev/null 2>&1 || true
    done
  done
fi

cat <<USAGE

collective is running: 3 nodes on 127.0.0.1:7001-7003 (gRPC over mutual TLS), 127.0.0.1:8001-8003 (HTTP).
  export COLLECTIVE_ENDPOINTS=$ENDPOINTS
  export COLLECTIVE_CACERT=$PWD/$PKI/ca.pem COLLECTIVE_TOKEN_FILE=$PWD/$DIR/admin.token
  alias c="$BIN"
  c whoami                               # admin:admin, by the administrator token
  c cluster status                       # leader, term, revision, members
  c site list
  c directory search --site 2            # what site 2's directory shows (spanning users included)
  c status set alan.s2 "Gone Home"
  c status watch --from-revision 1       # every event since the start (Ctrl-C to stop)
  c extension resolve 1100 --from-site 2 # ada.s1 roamed to Paris: the dial string goes there
  c route explain demo-call-1            # who was considered for the Paris call, and why the winner won
  c route call --id call-2 --origin 1 --workgroup Support --skill english=50
  c route stats --watch                  # live per-workgroup statistics (Ctrl-C to stop)
  c route matrix                         # calls per origin site -> agent site, and route costs
  c bench presence --clients 64 --duration 10
  c bench route --agents 2000 --sites 20 --clients 128
  curl http://127.0.0.1:8001/metrics     # Prometheus metrics; /livez, /readyz
  # A site's own session: it may change its users only (PERMISSION_DENIED otherwise).
  COLLECTIVE_SITE_PASSWORD=demo-password c login --site 2 > /tmp/site2.token
  c --token-file /tmp/site2.token status set alan.s2 "Available"       # allowed: homed at site 2
  c --token-file /tmp/site2.token status set alan.s1 "Available"       # refused: site 1's user
Logs: $DIR/node*.log   Stop: deploy/local-cluster.sh stop   Wipe: deploy/local-cluster.sh clean
USAGE
