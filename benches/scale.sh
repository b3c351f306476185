#!/usr/bin/env bash
# Scale-out benchmark: accepted and delivered records/s for one instance on SQLite,
# one on PostgreSQL and two on PostgreSQL (one database), in one run.
#
#   bash benches/scale.sh        # DURATION=15s CONNS=64 (split across instances)
#
# wrk POSTs ~1.2 KB records (benches/post-record.lua) for DURATION; "accepted/s" is
# wrk's 202 rate summed over the instances. The instances deliver to one loopback
# receiver (`hallgate receive`) while and after they accept; "delivered/s" is all
# accepted records divided by the time from the start of the load until the shared
# queue is empty. PostgreSQL is the throwaway server of scripts/pg-test-server.sh
# (fsync on, synchronous_commit on).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15s} CONNS=${CONNS:-64}
OUT=/tmp/hgbench-scale
mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
BIN=target/release/hallgate
eval "$(bash scripts/pg-test-server.sh start)"
PGURL=${HALLGATE_TEST_POSTGRES%/*}/hallgate_bench
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_up() { for _ in $(seq 200); do curl -sf "$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 ~ "^"m {s += $2} END {print s + 0}'; }

config() { # store port id -> path
  local f="$OUT/$3.toml"
  sed -e "s#^store = .*#store = \"$1\"#" -e "s#^listen = .*#listen = \"127.0.0.1:$2\"#" \
      -e "s#^id = .*#id = \"$3\"#" benches/bench.toml > "$f"
  echo "$f"
}

"$BIN" receive --listen 127.0.0.1:18201 --name city-platform >/dev/null 2>&1 & pids+=($!)
sleep 0.5
: > "$OUT/results.txt"

run() { # label store instances
  local label=$1 store=$2 n=$3
  rm -f "$OUT"/hallgate.db*
  if [[ $store == postgres* ]]; then
    psql -q "${HALLGATE_TEST_POSTGRES}" -c "DROP DATABASE IF EXISTS hallgate_bench" -c "CREATE DATABASE hallgate_bench"
  fi
  local urls=() gws=()
  for i in $(seq "$n"); do
    local port=$((18089 + i))
    RUST_LOG=warn "$BIN" serve --config "$(config "$store" "$port" "bench-$i")" 2>>"$OUT/hallgate.log" & gws+=($!); pids+=($!)
    urls+=("http://127.0.0.1:$port")
    wait_up "http://127.0.0.1:$port"
  done
  local start; start=$(date +%s.%N)
  local w=()
  for i in $(seq "$n"); do
    WRK_BASE=$((10 * i)) WRK_OUT=$OUT/wrk-$label.txt WRK_LABEL="$label-$i" wrk -t$((2 / n > 0 ? 2 / n : 1)) -c$((CONNS / n)) -d"$DURATION" \
      --latency -s benches/post-record.lua "${urls[$((i - 1))]}/v1/records" > /dev/null & w+=($!)
  done
  wait "${w[@]}"
  local accepted=0
  for u in "${urls[@]}"; do accepted=$((accepted + $(metric "$u" hallgate_records_accepted_total))); done
  while [ "$(metric "${urls[0]}" hallgate_queue_depth)" != 0 ]; do sleep 0.2; done
  local end; end=$(date +%s.%N)
  for g in "${gws[@]}"; do kill -TERM "$g"; wait "$g" || true; done
  python3 - "$label" "$OUT/wrk-$label.txt" "$accepted" "$start" "$end" "$DURATION" >> "$OUT/results.txt" <<'PY'
import re, sys
label, path, accepted, start, end, dur = sys.argv[1:]
rows = [dict(re.findall(r'(\w+)=([\d.]+)', l)) for l in open(path)]
rps = sum(float(r['rps']) for r in rows)
p99 = max(float(r['p99_ms']) for r in rows)
errs = sum(int(r['errors_status']) + int(r['errors_timeout']) for r in rows)
drain = float(end) - float(start)
print(f"{label:14} accepted {rps:8.0f}/s (p99 {p99:6.2f} ms, errors {errs})  delivered {int(accepted)/drain:8.0f}/s ({accepted} records, queue empty after {drain:.1f} s)")
PY
  rm -f "$OUT/wrk-$label.txt"
  tail -1 "$OUT/results.txt"
}

run sqlite-1 "sqlite://$OUT/hallgate.db" 1
run postgres-1 "$PGURL" 1
run postgres-2 "$PGURL" 2
