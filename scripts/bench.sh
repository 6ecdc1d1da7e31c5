#!/usr/bin/env bash
# Prints kiln's benchmark figures (release build), with its own test services.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${KILN_TEST_STATE:-/tmp/kiln-bench-env}
export KILN_TEST_STATE=$STATE KILN_REGISTRY_PORT=${KILN_REGISTRY_PORT:-5050} KILN_AUTH_REGISTRY_PORT=${KILN_AUTH_REGISTRY_PORT:-5051}
bash scripts/test-env.sh up
trap 'bash scripts/test-env.sh down' EXIT
# shellcheck disable=SC1091
source "$STATE/env"
actions/build.sh "$KILN_TEST_REGISTRY"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --target x86_64-unknown-linux-gnu -p kiln-agent
KILN_AGENT_BIN=target/x86_64-unknown-linux-gnu/release/kiln-agent hook-image/build.sh hook-image/out
tests/vm/build-test-os.sh hook-image/out target/kiln-test-os
cargo build --release --workspace --bins
target/release/bench-agent-overhead
target/release/bench-image2disk
target/release/bench-vm
target/release/bench-enrol
