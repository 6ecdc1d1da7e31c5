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

actions/build.sh "$KILN_TEST_REGISTRY,$KILN_TEST_AUTH_REGISTRY"
# The integration tests run the built binaries (server, agent, CLI).
cargo build --workspace --bins
cargo test --workspace "$@"
