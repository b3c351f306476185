#!/usr/bin/env bash
# The test suite, as CI runs it: start a throwaway PostgreSQL on loopback (installed
# from Debian's packages when missing and run as root), run every test against it
# and the embedded SQLite, stop PostgreSQL.
#
#   bash scripts/test.sh            # extra arguments go to cargo test
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/pg-test-server.sh start)"
trap 'bash scripts/pg-test-server.sh stop' EXIT
cargo test --locked "$@"
