#!/usr/bin/env bash
# Installs what building collective needs on Debian, when missing: libclang (RocksDB bindings),
# protoc (proto code generation), a C++ compiler (RocksDB), make (jemalloc's build), curl (scripts).
# With --test, also what the tests use: a Docker engine and docker-compose (the container test),
# kubernetes-validate (the Kubernetes manifests' schema check, from PyPI), promtool (from Debian's
# prometheus, without its recommended exporters: checks and unit-tests the alert rules), buf (npm
# @bufbuild/buf, into /var/tmp/collective-buf: lints the proto and checks it against the last
# release), Python's grpcio-health-checking (a foreign client in deploy/test-clients.sh), and
# OpenLDAP's slapd and ldap-utils (the directory source's tests run a real LDAP server), and
# Debian's chromium with npm's playwright-core (the board's browser test, deploy/test-board.sh).
set -euo pipefail
missing=()
bare=() # installed without recommended packages
if [ "${1:-}" = --test ]; then
  command -v promtool >/dev/null 2>&1 || bare+=(prometheus)
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v slapd >/dev/null 2>&1 || missing+=(slapd)
  command -v ldapmodify >/dev/null 2>&1 || missing+=(ldap-utils)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  python3 -c 'import kubernetes_validate' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'kubernetes-validate==1.37.0'
  python3 -c 'import grpc_health.v1, grpc_reflection.v1alpha' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      'grpcio==1.85.1' 'grpcio-health-checking==1.85.1' 'grpcio-reflection==1.85.1'
  [ -x /var/tmp/collective-buf/node_modules/.bin/buf ] ||
    npm install --silent --no-audit --no-fund --prefix /var/tmp/collective-buf '@bufbuild/buf@1.75.0'
  [ -d /var/tmp/collective-board-test/node_modules/playwright-core ] ||
    npm install --silent --no-audit --no-fund --prefix /var/tmp/collective-board-test 'playwright-core@1.64.1'
fi
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v cargo >/dev/null 2>&1 || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
if [ ${#missing[@]} -gt 0 ] || [ ${#bare[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  [ ${#bare[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${bare[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt 2>/dev/null || true
