#!/usr/bin/env bash
# Runs every check CI runs: format, clippy with warnings as errors, and all tests (unit, state
# machine, storage suite, 3-process cluster, seeded replica simulation). Read-only: it rewrites
# nothing (use `cargo fmt --all` to fix formatting).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
deploy/install-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
