#!/usr/bin/env bash
# The test suite, as CI runs it: start a throwaway PostgreSQL and MariaDB on loopback
# (installed from Debian's packages when missing and run as root), run every test
# against them and the embedded SQLite, stop them; then build and check the .deb.
#
#   bash scripts/test.sh            # extra arguments go to cargo test
#   SKIP_PACKAGE=1 bash scripts/test.sh --test tokens   # a quick loop, without the .deb
set -euo pipefail
cd "$(dirname "$0")/.."
# Independent checkers from PyPI, under target/ beside the build, not in the system's
# Python: gmssl, the 国密 peer of tests/guomi*.rs; openapi-spec-validator (with
# jsonschema), the judge of /openapi.json in tests/openapi.rs.
export HALLGATE_PYDEPS="$PWD/target/pydeps"
if ! PYTHONPATH="$HALLGATE_PYDEPS" /usr/bin/python3 -c 'import gmssl, openapi_spec_validator' 2>/dev/null; then
  /usr/bin/python3 -m pip install --quiet --disable-pip-version-check \
    --target "$HALLGATE_PYDEPS" 'gmssl==3.2.2' 'openapi-spec-validator==0.7.1'
fi
eval "$(bash scripts/pg-test-server.sh start)"
# The 前置库 tests' MariaDB (tests/tables.rs), from Debian's packages, likewise.
eval "$(bash scripts/mariadb-test-server.sh start)"
# Every answer the gateways give during the tests is written here (src/api/tap.rs)
# and checked against the OpenAPI document after them.
export HALLGATE_ANSWER_LOG="$(mktemp -d)"
trap 'bash scripts/pg-test-server.sh stop; bash scripts/mariadb-test-server.sh stop; rm -rf "$HALLGATE_ANSWER_LOG"' EXIT
cargo test --locked "$@"
./target/debug/hallgate openapi > "$HALLGATE_ANSWER_LOG/openapi.json"
PYTHONPATH="$HALLGATE_PYDEPS" /usr/bin/python3 tests/fixtures/openapi_check.py \
  "$HALLGATE_ANSWER_LOG/openapi.json" --answers "$HALLGATE_ANSWER_LOG"
# The Debian package: built, unpacked into a scratch root, its layout and unit checked.
[ -n "${SKIP_PACKAGE:-}" ] || bash scripts/package-check.sh
