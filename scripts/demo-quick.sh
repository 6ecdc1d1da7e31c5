#!/usr/bin/env bash
# The quick demo (`scripts/demo.sh --quick`), no VM: installs what is missing, starts a Docker
# engine and a local registry, builds and pushes the sample action images,
# starts kiln-server on the embedded store and a kiln-agent, applies the
# sample workflow and follows it to the end. Stops everything on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${KILN_DEMO_STATE:-/tmp/kiln-demo}
export KILN_TEST_STATE=$STATE/services KILN_REGISTRY_PORT=5040 KILN_AUTH_REGISTRY_PORT=5041
PORT=${KILN_DEMO_PORT:-42113}
MAC=02:00:00:00:de:01

bash scripts/test-env.sh up
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash scripts/test-env.sh down
}
trap cleanup EXIT
# shellcheck disable=SC1091
source "$KILN_TEST_STATE/env"

actions/build.sh "$KILN_TEST_REGISTRY"
cargo build --release --bins
BIN=target/release

rm -rf "$STATE/data"
# TLS with a development CA generated into the data directory; the operator
# credential is created there too (DATA_DIR/admin-token).
"$BIN/kiln-server" --listen "127.0.0.1:$PORT" --data-dir "$STATE/data" --dev-tls 2>"$STATE/server.log" &
pids+=($!)

export KILN_SERVER=https://127.0.0.1:$PORT KILN_CA=$STATE/data/tls/ca.pem KILN_TOKEN_FILE=$STATE/data/admin-token
for _ in $(seq 1 50); do "$BIN/kiln" get workflows >/dev/null 2>&1 && break; sleep 0.2; done
# Applying the hardware prints its agent token, once: it goes into a file
# only the agent reads.
sed -e "s|REGISTRY|$KILN_TEST_REGISTRY|g" -e "s|MAC|$MAC|g" examples/hello.yaml | "$BIN/kiln" apply -f - >"$STATE/apply.out"
grep -v '^agent token' "$STATE/apply.out"
(umask 077; sed -n 's/^agent token for hardware.*: //p' "$STATE/apply.out" >"$STATE/agent.token")
rm -f "$STATE/apply.out"
(umask 077; cat >"$STATE/agent.yaml" <<YML
server: https://127.0.0.1:$PORT
ca_file: $KILN_CA
token_file: $STATE/agent.token
agent_id: "$MAC"
docker_host: $KILN_TEST_DOCKER_HOST
host_network: true
YML
)
"$BIN/kiln-agent" --config "$STATE/agent.yaml" 2>"$STATE/agent.log" &
pids+=($!)
"$BIN/kiln" plan hello-1
"$BIN/kiln" watch hello-1
"$BIN/kiln" logs hello-1
"$BIN/kiln" get workflows
echo "server and agent logs: $STATE/server.log $STATE/agent.log"
