#!/usr/bin/env bash
# Builds the collective container image without pulling anything: the `collective` binary of
# this checkout (the one build profile, stripped) and the shared libraries it links, on
# `FROM scratch`, running as uid 10001 with its data in the volume /var/lib/collective.
#
#   deploy/image/build.sh [TAG]       # default collective:<version> and collective:latest
#
# To publish: docker tag collective:latest REGISTRY/collective:VERSION && docker push ...
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/collective-target}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag="${1:-collective:$version}"

cargo build -p collective-cli --bin collective >&2
binary="$CARGO_TARGET_DIR/debug/collective"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/collective" "$rootfs/var/lib/collective" "$rootfs/tmp"
objcopy --strip-debug "$binary" "$rootfs/usr/local/bin/collective"
# The dynamic loader and every library the binary links, at the paths it looks for them.
for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\ncollective:x:10001:10001:collective:/var/lib/collective:/sbin/nologin\n' \
    > "$rootfs/etc/passwd"
printf 'root:x:0:\ncollective:x:10001:\n' > "$rootfs/etc/group"
# glibc resolves names by /etc/hosts, then DNS (container runtimes mount resolv.conf and hosts).
printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" --exclude=./var/lib/collective -cf "$context/rootfs.tar" .
tar --numeric-owner --owner=10001 --group=10001 -C "$rootfs" -rf "$context/rootfs.tar" ./var/lib/collective
cp deploy/image/Dockerfile "$context/"
docker build --quiet -t "$tag" -t collective:latest "$context" >&2
size=$(docker image inspect "$tag" --format '{{.Size}}')
echo "built $tag ($((size / 1024 / 1024)) MiB)" >&2
echo "$tag"
