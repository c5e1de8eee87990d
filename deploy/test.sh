#!/usr/bin/env bash
# Runs every check CI runs: format, clippy with warnings as errors, all tests (unit, state
# machine, storage suite, 3-process cluster, seeded replica simulation, 50 seeds of whole-cluster
# turmoil simulation), the loom models, buf lint/breaking on the proto, foreign gRPC clients,
# the alert rules, the deployment manifests and the container test. Read-only: it rewrites
# nothing (use `cargo fmt --all` to fix formatting).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
deploy/install-deps.sh --test
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
# loom needs `--cfg loom` on every crate it builds; a target directory of its own keeps that
# from invalidating the main build (collective-sync has no dependencies besides loom).
echo "== loom models"
RUSTFLAGS="--cfg loom --cfg tokio_unstable" CARGO_TARGET_DIR="$CARGO_TARGET_DIR/loom" \
    cargo test -p collective-sync --test loom
echo "== proto: buf lint, buf breaking against the last released descriptor"
(cd proto && /var/tmp/collective-buf/node_modules/.bin/buf lint &&
    /var/tmp/collective-buf/node_modules/.bin/buf breaking --against released/v0.1.0.binpb)
echo "== foreign clients: grpcio-health-checking, buf curl through reflection"
deploy/test-clients.sh
echo "== the supervisor board in headless chromium"
deploy/test-board.sh
echo "== monitoring: promtool check and unit tests of the alert rules, the dashboard's JSON"
promtool check rules deploy/monitoring/alerts.yaml
promtool test rules deploy/monitoring/alerts-test.yaml
python3 -m json.tool deploy/monitoring/grafana-dashboard.json >/dev/null
echo "== deployment manifests: kubernetes-validate --strict, docker-compose config"
python3 -m kubernetes_validate --strict --quiet \
    deploy/k8s/{configmap,secret,services,statefulset,poddisruptionbudget}.yaml
COLLECTIVE_SECRETS=/run/secrets/collective docker-compose -f deploy/compose.yaml -f deploy/compose.tls.yaml config -q
echo "== containers: image, compose cluster under faults, StatefulSet settings"
COLLECTIVE_CONTAINERS=optional deploy/test-containers.sh
