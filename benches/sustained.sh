#!/usr/bin/env bash
# Sustained throughput: what the gateway keeps up indefinitely, accepted AND delivered.
#
#   bash benches/sustained.sh              # DURATION=60 (s) CONNS=64 WARMUP=10 (s)
#   BIN=/path/to/hallgate bash benches/sustained.sh   # another build
#   STORE=postgres bash benches/sustained.sh          # the throwaway PostgreSQL instead
#   BATCH=100 bash benches/sustained.sh               # bodies of 100 records, and a
#                                                     # destination with batch = { max_records = 100 }
#
# wrk POSTs ~1.2 KB records (benches/post-record.lua) for DURATION seconds while the
# gateway delivers them to a loopback receiver (`hallgate receive`). Every 5 s the
# script reads /metrics: records accepted, deliveries delivered, and the queue depth.
# The steady part is from WARMUP to the end of the load. It reports accepted/s and
# delivered/s over the steady part, the backlog at its start and end (flat = delivery
# keeps pace), and how long the queue took to drain after the load. nginx proxy_pass
# to a static 202 runs for DURATION in the same run: the ceiling of one HTTP hop here.
# Needs wrk and nginx (Debian: wrk nginx-light); installs them when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60} CONNS=${CONNS:-64} THREADS=${THREADS:-2} WARMUP=${WARMUP:-10}
OUT=/tmp/hgbench-sustained
rm -rf "$OUT"; mkdir -p "$OUT"
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=target/release/hallgate
fi
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$OUT/nginx/logs/nginx.pid" ] && kill "$(cat "$OUT/nginx/logs/nginx.pid")" 2>/dev/null || true
  if [ "${STORE:-sqlite}" = postgres ]; then bash scripts/pg-test-server.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 ~ "^"m {s += $2} END {printf "%d\n", s + 0}'; }

store="sqlite://$OUT/hallgate.db"
if [ "${STORE:-sqlite}" = postgres ]; then
  eval "$(bash scripts/pg-test-server.sh start)"
  store=${HALLGATE_TEST_POSTGRES%/*}/hallgate_sustained
  psql -q "$HALLGATE_TEST_POSTGRES" -c "DROP DATABASE IF EXISTS hallgate_sustained" -c "CREATE DATABASE hallgate_sustained" 2>/dev/null
fi
sed -e "s#^store = .*#store = \"$store\"#" benches/bench.toml > "$OUT/bench.toml"
BATCH=${BATCH:-}
if [ -n "$BATCH" ]; then
  # N records per body (case numbers CASENO00…), and a batching destination.
  python3 - "$BATCH" > "$OUT/body.json" <<'PY'
import sys
one = open("benches/one-record.json").read().strip()
print("[" + ",".join(one.replace("CASENO", "CASENO%02d" % i) for i in range(int(sys.argv[1]))) + "]")
PY
  export BODY_FILE=$OUT/body.json BATCH
  sed -i -e "s#^destination = { url = \"http://127.0.0.1:18201/records\", #&batch = { max_records = $BATCH }, #" "$OUT/bench.toml"
  grep -q "batch = { max_records" "$OUT/bench.toml" || { echo "bench.toml: no destination to batch" >&2; exit 1; }
fi

"$BIN" receive --listen 127.0.0.1:18201 --name city-platform >/dev/null 2>&1 & pids+=($!)
RUST_LOG=warn "$BIN" serve --config "$OUT/bench.toml" 2>>"$OUT/hallgate.log" & gw=$!; pids+=($gw)
GW=http://127.0.0.1:18090
wait_port "$GW/healthz"

WRK_OUT=$OUT/wrk.txt WRK_LABEL=hallgate wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
  -s benches/post-record.lua "$GW/v1/records" > /dev/null & w=$!
start=$(date +%s.%N)
: > "$OUT/samples.txt"
while kill -0 $w 2>/dev/null; do
  now=$(date +%s.%N)
  echo "$(python3 -c "print(round($now - $start, 1))") $(metric $GW hallgate_records_accepted_total) $(metric $GW hallgate_deliveries_delivered_total) $(metric $GW hallgate_queue_depth)" >> "$OUT/samples.txt"
  sleep 5
done
wait $w || true
end_load=$(date +%s.%N)
echo "$(python3 -c "print(round($end_load - $start, 1))") $(metric $GW hallgate_records_accepted_total) $(metric $GW hallgate_deliveries_delivered_total) $(metric $GW hallgate_queue_depth)" >> "$OUT/samples.txt"
while [ "$(metric $GW hallgate_queue_depth)" != 0 ]; do sleep 0.5; done
drained=$(python3 -c "print(round($(date +%s.%N) - $end_load, 1))")
kill -TERM $gw; wait $gw || true

bash benches/baselines/nginx-conf.sh "$OUT/nginx" >/dev/null
nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf"
wait_port -X POST http://127.0.0.1:18080/ 2>/dev/null || sleep 0.5
WRK_OUT=$OUT/wrk.txt WRK_LABEL=nginx wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
  -s benches/post-record.lua http://127.0.0.1:18080/v1/records > /dev/null
kill "$(cat "$OUT/nginx/logs/nginx.pid")"

python3 - "$OUT/samples.txt" "$OUT/wrk.txt" "$WARMUP" "$drained" "${STORE:-sqlite}" "${BATCH:-1}" <<'PY'
import re, sys
samples, wrk, warmup, drained, store = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
per_body = int(sys.argv[6])
rows = [tuple(float(x) for x in l.split()) for l in open(samples) if l.strip()]
print("   t(s)   accepted  delivered    backlog")
for t, a, d, q in rows:
    print(f"{t:7.1f} {a:10.0f} {d:10.0f} {q:10.0f}")
first = next(r for r in rows if r[0] >= warmup)
last = rows[-1]
span = last[0] - first[0]
acc = (last[1] - first[1]) / span
dlv = (last[2] - first[2]) / span
w = {l.split()[0]: dict(re.findall(r'(\w+)=([\d.]+)', l)) for l in open(wrk)}
ng = float(w["nginx"]["rps"]) * per_body
print(f"store {store}, {per_body} record(s) per body, steady part {first[0]:.0f}-{last[0]:.0f} s:")
print(f"  accepted {acc:8.0f}/s   delivered {dlv:8.0f}/s   delivered/accepted {dlv/acc:.2f}")
print(f"  backlog {first[3]:.0f} at the start, {last[3]:.0f} at the end; queue empty {drained} s after the load")
print(f"  sustained end to end (min of the two) {min(acc, dlv):.0f}/s; hallgate p99 {float(w['hallgate']['p99_ms']):.2f} ms")
print(f"  nginx proxy_pass ceiling {ng:.0f} records/s; ratio sustained/nginx {min(acc, dlv)/ng:.3f}")
PY
