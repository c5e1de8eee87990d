#!/usr/bin/env bash
# Clients that are not ours, against a real 3-member cluster of the built binary:
#   1. Python's grpcio-health-checking asks grpc.health.v1 for the whole server and for each
#      client service by name (SERVING once a leader is known), and for an unknown name (NOT_FOUND);
#   2. `buf curl`, knowing nothing but what server reflection tells it, calls GetUser for a user
#      that does not exist; the google.rpc.ErrorInfo its error carries is decoded by Python's
#      grpcio-reflection from the descriptors the server reflects.
# Run by deploy/test.sh after `cargo test` (which builds the binary); deploy/install-deps.sh --test
# installs grpcio-health-checking and grpcio-reflection (PyPI) and buf (npm).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
BIN="$CARGO_TARGET_DIR/debug/collective"
BUF=/var/tmp/collective-buf/node_modules/.bin/buf
say() { echo "== clients: $*" >&2; }
fail() { say "FAILED: $*"; for log in "$dir"/node*.log; do tail -5 "$log" >&2; done; exit 1; }

dir=$(mktemp -d /tmp/collective-clients.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# Free ports from the kernel, so a second run or another test on this machine cannot collide.
read -r -a ports <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
cluster="1=127.0.0.1:${ports[0]},2=127.0.0.1:${ports[1]},3=127.0.0.1:${ports[2]}"
echo "clients-test-token-0123456789abcdef" >"$dir/admin.token"
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
curl -fs "http://127.0.0.1:${ports[3]}/readyz" >/dev/null || fail "member 1 never became ready"

say "grpcio-health-checking: each service by name"
python3 - "127.0.0.1:${ports[1]}" <<'EOF' || fail "grpcio-health-checking"
import sys, time
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(sys.argv[1]))
SERVING = health_pb2.HealthCheckResponse.SERVING
services = ["", "collective.v1.Directory", "collective.v1.Presences", "collective.v1.Cluster",
            "collective.v1.Messages", "collective.v1.Notes", "collective.v1.Routing",
            "collective.v1.Config", "collective.v1.Sources"]
deadline = time.time() + 10
for service in services:
    while True:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
        if status == SERVING:
            break
        if time.time() > deadline:
            sys.exit(f"{service!r} is {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
        time.sleep(0.1)
    print(f"  {service or '(server)'}: SERVING")
try:
    stub.Check(health_pb2.HealthCheckRequest(service="collective.v1.Nothing"), timeout=2)
    sys.exit("an unknown service name was answered")
except grpc.RpcError as error:
    if error.code() != grpc.StatusCode.NOT_FOUND:
        sys.exit(f"an unknown service name gave {error.code()}, not NOT_FOUND")
    print("  collective.v1.Nothing: NOT_FOUND")
# Watch streams the current status first, as the protocol requires.
first = next(stub.Watch(health_pb2.HealthCheckRequest(service="collective.v1.Routing"), timeout=5))
if first.status != SERVING:
    sys.exit(f"Watch began with {first.status}")
print("  Watch(collective.v1.Routing): SERVING")
EOF

say "buf curl: an error's details, decoded through reflection alone"
set +e
answer=$("$BUF" curl --protocol grpc --http2-prior-knowledge \
    -H "authorization: Bearer clients-test-token-0123456789abcdef" \
    -d '{"username": "nobody"}' \
    "http://127.0.0.1:${ports[2]}/collective.v1.Directory/GetUser" 2>&1)
code=$?
set -e
echo "$answer" | sed 's/^/  /' >&2
[ "$code" -ne 0 ] || fail "GetUser of a missing user succeeded"
echo "$answer" | grep -q '"code": "not_found"' || fail "no not_found code in buf curl's answer"
# buf curl names each detail's type and prints its bytes: it decodes details only with the types
# compiled into buf (connect-go's error writer), not with reflected ones. A reflection client
# (Python's grpcio-reflection, knowing no collective or google.rpc type) decodes them.
python3 - "127.0.0.1:${ports[0]}" "$answer" <<'EOF_PY' || fail "the ErrorInfo did not decode through reflection"
import base64, json, sys
import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(grpc.insecure_channel(sys.argv[1])))
details = json.loads(sys.argv[2])["details"]
if [d["type"] for d in details] != ["google.rpc.ErrorInfo"]:
    sys.exit(f"details are {details}")
value = details[0]["value"]
info = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.ErrorInfo"))()
info.ParseFromString(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
print(f"  ErrorInfo: reason={info.reason} domain={info.domain} metadata={dict(info.metadata)}")
if (info.reason, info.domain, info.metadata.get("key")) != ("NOT_FOUND", "collective", "nobody"):
    sys.exit(f"unexpected ErrorInfo {info}")
EOF_PY
say "ok"
