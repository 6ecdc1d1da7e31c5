#!/usr/bin/env bash
# The fast tier: every crate's unit tests (--lib and --bins), without
# PostgreSQL, Docker, registries or loop devices; seconds once built.
# The full run (integration tests against real services) is scripts/test.sh.
#
# kiln-server's --lib holds the store conformance suite, which runs every
# check against SQLite and against a private PostgreSQL it starts itself
# (server/src/store/conformance.rs, `mod postgres`): those are skipped here
# by name; the SQLite half runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS=(-p kiln-proto -p kiln-documents -p kiln-server -p kiln-agent -p kiln-cli -p kiln-action-kit -p kiln-partition-path)
for a in image2disk partition format writefile cexec kexec archive2disk; do PKGS+=(-p "kiln-action-$a"); done
cargo test "${PKGS[@]}" --lib --bins -- --skip store::conformance::postgres:: "$@"
