#!/usr/bin/env bash
# Runs every kiln test: unit tests, and integration tests against a real
# Docker engine and real registries, which this script installs (apt),
# starts, and stops again.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${KILN_TEST_STATE:-/tmp/kiln-test-env}
export KILN_TEST_STATE=$STATE

bash scripts/test-env.sh up
trap 'bash scripts/test-env.sh down' EXIT
# shellcheck disable=SC1091
source "$STATE/env"

# The static release binaries (action images, and the agent of the hook
# image) in one cargo run, so they share their dependencies' builds.
ACTION_PKGS=()
for a in image2disk partition format writefile cexec kexec archive2disk oci2disk qemuimg2disk slurp rootio syslinux grub2disk; do ACTION_PKGS+=(-p "kiln-action-$a"); done
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --target x86_64-unknown-linux-gnu \
    -p kiln-agent "${ACTION_PKGS[@]}"
actions/build.sh "$KILN_TEST_REGISTRY,$KILN_TEST_AUTH_REGISTRY"
# The VM test boots the hook image and installs a small OS built from it.
KILN_AGENT_BIN=target/x86_64-unknown-linux-gnu/release/kiln-agent hook-image/build.sh hook-image/out
tests/vm/build-test-os.sh hook-image/out target/kiln-test-os
# The integration tests run the built binaries (server, agent, CLI).
cargo build --workspace --bins
LOG=$STATE/cargo-test.log
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$LOG" || status=$?
# One closing line for the whole run: cargo prints one per test binary,
# and the last of those (doc tests) is usually "0 passed".
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$LOG"
exit $status
