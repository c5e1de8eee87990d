#!/usr/bin/env bash
# The container test: builds the image, brings up deploy/compose.yaml (3 members, their own
# network, named volumes), loads users through gRPC from the host, then
#   1. docker kill the leader and times how long until a write is acknowledged again;
#   2. cuts a follower off its network (docker network disconnect), writes without it,
#      reconnects it under its service name (--alias) and waits for it to catch up;
#   3. stops and starts the whole cluster;
# and after each step finds every acknowledged write on every member. Everything it starts, it
# stops (docker-compose down -v), also on failure.
#
#   deploy/test-containers.sh            # starts dockerd in the background when none runs
#
# Without a Docker engine (and none can be started) it says so and exits 0 when
# COLLECTIVE_CONTAINERS=optional (what deploy/test.sh sets), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"

say() { echo "== containers: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

# --- a Docker engine -----------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    if command -v dockerd >/dev/null 2>&1; then
        say "starting dockerd in the background"
        (nohup dockerd >/var/tmp/collective-dockerd.log 2>&1 &)
        for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    fi
    if ! docker info >/dev/null 2>&1; then
        if [ "${COLLECTIVE_CONTAINERS:-}" = optional ]; then
            say "skipped: no Docker engine runs here and none could be started (see /var/tmp/collective-dockerd.log)"
            exit 0
        fi
        fail "no Docker engine runs here and none could be started"
    fi
fi
command -v docker-compose >/dev/null || fail "docker-compose is not installed (apt-get install docker-compose)"

image=$(deploy/image/build.sh "collective:test")
bin="$CARGO_TARGET_DIR/debug/collective"
project="collectivetest$$"
work=$(mktemp -d)
mkdir -p "$work/secrets"
head -c 48 /dev/urandom | base64 -w0 > "$work/secrets/admin-token"
chmod 0755 "$work/secrets"
chmod 0644 "$work/secrets/admin-token"

# Loopback ports nothing listens on.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
export COLLECTIVE_IMAGE="$image" COLLECTIVE_SECRETS="$work/secrets"
export COLLECTIVE_PORT_1=$(free_port) COLLECTIVE_PORT_2=$(free_port) COLLECTIVE_PORT_3=$(free_port)
export COLLECTIVE_HTTP_PORT_1=$(free_port) COLLECTIVE_HTTP_PORT_2=$(free_port) COLLECTIVE_HTTP_PORT_3=$(free_port)
ports=("" "$COLLECTIVE_PORT_1" "$COLLECTIVE_PORT_2" "$COLLECTIVE_PORT_3")
compose() { docker-compose -p "$project" -f deploy/compose.yaml "$@"; }
network="${project}_collective"
container() { echo "${project}_n$1_1"; }

cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        for n in 1 2 3; do
            say "member $n's last log lines:"
            docker logs --tail 15 "$(container "$n")" 2>&1 | cut -c1-400 >&2 || true
        done
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    docker image rm "$image" >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

export COLLECTIVE_TOKEN_FILE="$work/secrets/admin-token"
all="127.0.0.1:${ports[1]},127.0.0.1:${ports[2]},127.0.0.1:${ports[3]}"
c() { "$bin" --endpoints "$all" "$@"; }

wait_healthy() {
    for _ in $(seq 1 120); do
        local healthy=0
        for n in "$@"; do
            [ "$(docker inspect -f '{{.State.Health.Status}}' "$(container "$n")" 2>/dev/null)" = healthy ] &&
                healthy=$((healthy + 1))
        done
        [ "$healthy" -eq $# ] && return 0
        sleep 0.5
    done
    fail "members $* never became healthy"
}

leader_id() {
    c -w json endpoint status 2>/dev/null |
        python3 -c 'import json,sys; print(max(r["leader"] for r in json.load(sys.stdin)["endpoints"]))'
}

# Every acknowledged username, in the order acknowledged.
acked="$work/acknowledged"
: > "$acked"
add_users() { # FROM TO [ENDPOINTS]
    local endpoints="${3:-$all}"
    for i in $(seq "$1" "$2"); do
        if "$bin" --endpoints "$endpoints" --timeout-ms 3000 user add --username "agent$i" \
            --display-name "Agent $i" --email "agent$i@example.com" --home-site 1 --extension "$((1000 + i))" \
            >/dev/null 2>"$work/error"; then
            echo "agent$i" >> "$acked"
        else
            fail "write agent$i was not acknowledged: $(cat "$work/error")"
        fi
    done
}

# Every acknowledged user is on member N (read from it alone, without a quorum check).
check_member() { # N WHAT
    local want have
    want=$(sort "$acked")
    for _ in $(seq 1 100); do
        have=$("$bin" --endpoints "127.0.0.1:${ports[$1]}" --serializable -w json user list 2>/dev/null |
            python3 -c 'import json,sys; print("\n".join(sorted(u["username"] for u in json.load(sys.stdin)["users"])))' \
            2>/dev/null || true)
        [ "$have" = "$want" ] && return 0
        sleep 0.2
    done
    fail "$2: member $1 lacks acknowledged writes: $(comm -23 <(echo "$want") <(echo "$have") | head -5 | tr '\n' ' ')"
}

check_all() { for n in 1 2 3; do check_member "$n" "$1"; done; say "$1: all $(wc -l < "$acked") acknowledged writes on every member"; }

say "bringing up the cluster ($image)"
compose up -d >/dev/null 2>&1 || { compose up -d; fail "docker-compose up failed"; }
wait_healthy 1 2 3
COLLECTIVE_SITE_PASSWORD=site-secret c site add --id 1 --name Indianapolis --phone "+1 317 555 0100" \
    --server indy-cic1 >/dev/null
add_users 1 30
check_all "loaded"

# 1. The leader is killed; the others elect a new one and writes resume.
leader=$(leader_id)
[ "$leader" -ge 1 ] || fail "no leader"
say "docker kill the leader, member $leader"
rest=$(for n in 1 2 3; do [ "$n" != "$leader" ] && printf '127.0.0.1:%s,' "${ports[$n]}"; done)
docker kill "$(container "$leader")" >/dev/null
killed=$(date +%s%N)
for _ in $(seq 1 200); do
    if "$bin" --endpoints "${rest%,}" --timeout-ms 500 user add --username agent-failover \
        --display-name "After failover" --email agent-failover@example.com --home-site 1 --extension 999 \
        >/dev/null 2>&1; then
        echo agent-failover >> "$acked"
        break
    fi
    sleep 0.05
done
grep -q agent-failover "$acked" || fail "no write was acknowledged within 10 s of the leader's kill"
say "writes resumed $(( ($(date +%s%N) - killed) / 1000000 )) ms after the leader was killed"
add_users 31 40 "${rest%,}"
docker start "$(container "$leader")" >/dev/null
wait_healthy 1 2 3
check_all "after the leader's kill and restart"

# 2. A follower is cut off its network, misses writes, comes back under its name and catches up.
leader=$(leader_id)
follower=$(( leader % 3 + 1 ))
say "cutting member $follower off the network"
docker network disconnect "$network" "$(container "$follower")"
add_users 41 60
if docker exec "$(container "$follower")" /usr/local/bin/collective probe /readyz >/dev/null 2>&1; then
    fail "member $follower still reads as ready while cut off"
fi
docker network connect --alias "n$follower" "$network" "$(container "$follower")"
say "member $follower reconnected"
wait_healthy 1 2 3
check_all "after the network cut"

# 3. The whole cluster stops and starts again on its volumes.
say "stopping and starting the whole cluster"
compose stop >/dev/null 2>&1
compose start >/dev/null 2>&1
wait_healthy 1 2 3
check_all "after a full stop and start"
add_users 61 65
check_all "writing again"

# 4. The Kubernetes manifests' settings, as a StatefulSet runs them: pods named collective-N
#    under the headless Service's names, the ConfigMap's collective.toml and a read-only root
#    filesystem; a fourth pod joins by itself.
say "Kubernetes settings: pods collective-0..2, then collective-3 scaling up"
python3 -c 'import sys,yaml; print(yaml.safe_load(open("deploy/k8s/configmap.yaml"))["data"]["collective.toml"])' \
    > "$work/collective.toml"
chmod 0644 "$work/collective.toml"
pod() { # ORDINAL
    docker run -d --name "${project}_collective-$1" --hostname "collective-$1" --network "$network" \
        --network-alias "collective-$1.collective-peer" --read-only --tmpfs /tmp \
        -v "$work/collective.toml:/etc/collective/collective.toml:ro" -v "$work/secrets:/run/secrets/collective:ro" \
        -v "${project}_pod$1:/var/lib/collective" -e COLLECTIVE_CONFIG=/etc/collective/collective.toml \
        -e COLLECTIVE_ADVERTISE_ADDR="collective-$1.collective-peer:7001" "$image" serve >/dev/null
}
pods_cleanup() {
    for n in 0 1 2 3; do docker rm -f "${project}_collective-$n" >/dev/null 2>&1 || true; done
    for n in 0 1 2 3; do docker volume rm "${project}_pod$n" >/dev/null 2>&1 || true; done
}
trap 'pods_cleanup; cleanup' EXIT
for n in 0 1 2; do pod "$n"; done
inside() { docker exec -e COLLECTIVE_TOKEN_FILE=/run/secrets/collective/admin-token "${project}_collective-0" \
    /usr/local/bin/collective --endpoints collective-0.collective-peer:7001 "$@"; }
voters() { inside -w json member list 2>/dev/null |
    python3 -c 'import json,sys; print(sum(m["role"]=="voter" for m in json.load(sys.stdin)["members"]))' 2>/dev/null || echo 0; }
for _ in $(seq 1 120); do [ "$(voters)" = 3 ] && break; sleep 0.5; done
[ "$(voters)" = 3 ] || fail "the pods never formed a 3-voter cluster"
pod 3
for _ in $(seq 1 120); do [ "$(voters)" = 4 ] && break; sleep 0.5; done
[ "$(voters)" = 4 ] || fail "pod collective-3 never joined as the fourth voter"
inside -w json member list | grep -q '"collective-3.collective-peer:7001"' || fail "member 4 has the wrong address"
say "pod collective-3 joined as member 4 (a voter)"
say "passed"
