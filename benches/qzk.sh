#!/usr/bin/env bash
# 前置库 throughput and memory against a throwaway MariaDB (benches/qzk.rs says what
# is measured and against which bare loop).
#
#   bash benches/qzk.sh                        # ROWS=50000 WRITES=20000
#   ROWS=1000000 WRITES=0 bash benches/qzk.sh  # peak RSS while draining a million rows
#   BIN=/path/to/hallgate bash benches/qzk.sh  # another build
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=$PWD/target/release/hallgate
fi
export BIN
eval "$(bash scripts/mariadb-test-server.sh start)"
trap 'bash scripts/mariadb-test-server.sh stop' EXIT
cargo bench -q --bench qzk
