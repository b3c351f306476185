#!/usr/bin/env bash
# Intake benchmark: hallgate (HTTP + sender check + validation + routing + durable
# SQLite commit with the audit chain, deliveries running to a loopback receiver), the
# same without payload retention ([audit] retain_payloads = false), the same with
# personal data encrypted at rest ([store] encrypt = "sm4-gcm"), and nginx
# proxy_pass to a static 202 (the no-durability ceiling), alternating, in one run.
#
#   bash benches/run.sh            # 3 rounds of 15 s each, 64 connections
#   ROUNDS=5 DURATION=20s CONNS=64 bash benches/run.sh
#
#   BIN=/path/to/hallgate bash benches/run.sh   # another build, for a before/after
#
# Sustained figures (60 s, accepted and delivered, the backlog over time) come from
# benches/sustained.sh.
#
# Needs wrk and nginx (Debian: wrk nginx-light); installs them when run as root. The
# nginx ceiling's config comes from benches/baselines/nginx-conf.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-15s} CONNS=${CONNS:-64} THREADS=${THREADS:-2}
OUT=/tmp/hgbench
mkdir -p "$OUT"
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null
fi
# BIN=PATH measures another build (a before/after comparison) instead of this tree's.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=target/release/hallgate
fi
RESULTS=$OUT/intake-results.txt
: > "$RESULTS"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; [ -f "$OUT/nginx/logs/nginx.pid" ] && kill "$(cat "$OUT/nginx/logs/nginx.pid")" 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

"$BIN" receive --listen 127.0.0.1:18201 --name city-platform >/dev/null 2>&1 & pids+=($!)
bash benches/baselines/nginx-conf.sh "$OUT/nginx" >/dev/null

run_gateway() { # label config
  rm -f "$OUT"/hallgate.db*
  RUST_LOG=warn "$BIN" serve --config "$2" 2>>"$OUT/hallgate.log" & gw=$!; pids+=($gw)
  wait_port http://127.0.0.1:18090/healthz
  WRK_OUT=$RESULTS WRK_LABEL="$1 round=$round" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
    -s benches/post-record.lua http://127.0.0.1:18090/v1/records | grep -E 'SUMMARY|Non-2xx' || true
  curl -s http://127.0.0.1:18090/metrics | grep -E '^hallgate_(records_accepted_total|deliveries_delivered_total|queue_depth)' || true
  kill -TERM $gw; wait $gw || true
}

echo 0123456789abcdeffedcba9876543210 > "$OUT/data.key"
for round in $(seq "$ROUNDS"); do
  run_gateway hallgate benches/bench.toml
  run_gateway hallgate-nopayload benches/bench-nopayload.toml
  run_gateway hallgate-encrypt benches/bench-encrypt.toml

  nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf"
  wait_port -X POST http://127.0.0.1:18080/ 2>/dev/null || sleep 0.5
  WRK_OUT=$RESULTS WRK_LABEL="nginx round=$round" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency \
    -s benches/post-record.lua http://127.0.0.1:18080/v1/records | grep -E 'SUMMARY|Non-2xx' || true
  kill "$(cat "$OUT/nginx/logs/nginx.pid")"; sleep 0.5
done

python3 - "$RESULTS" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who = line.split()[0]
    kv = dict(re.findall(r'(\w+)=([\d.]+)', line))
    rows.setdefault(who, []).append(kv)
med = lambda who, k: statistics.median(float(r[k]) for r in rows[who])
for who in ("hallgate", "hallgate-nopayload", "hallgate-encrypt", "nginx"):
    errs = sum(int(r['errors_status']) + int(r['errors_timeout']) for r in rows[who])
    print(f"{who:18} median of {len(rows[who])}: {med(who,'rps'):9.0f} req/s  p50 {med(who,'p50_ms'):6.2f} ms  p99 {med(who,'p99_ms'):6.2f} ms  non-2xx+timeouts {errs}")
print(f"ratio hallgate/nginx: {med('hallgate','rps')/med('nginx','rps'):.2f}")
print(f"ratio hallgate (payloads kept) / hallgate (payloads not kept): {med('hallgate','rps')/med('hallgate-nopayload','rps'):.2f}")
print(f"ratio hallgate (encrypted at rest) / hallgate (clear): {med('hallgate-encrypt','rps')/med('hallgate','rps'):.2f}")
PY
