#!/usr/bin/env bash
# What the console costs intake: the gateway's records accepted/s under wrk's load
# (benches/post-record.lua, as benches/sustained.sh sends), in rounds without and
# with an auditor loading the console's overview page back to back on one
# connection (wrk -c1 with the session cookie: far more than a person clicks). The
# rounds alternate (after a warm-up round, in ABBA order), so both meet the same
# machine; the ratio of each pair is reported. The overview is the console's heaviest page: it reads every
# destination's queue from the store, the pull sources and the per-minute chart.
#
#   bash benches/console-load.sh            # DURATION=20 (s per round) PAIRS=3 CONNS=64
# Needs wrk (Debian: wrk); installs it when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20} PAIRS=${PAIRS:-3} CONNS=${CONNS:-64}
OUT=/tmp/hgbench-console
rm -rf "$OUT"; mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=target/release/hallgate
fi
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

sed -e "s#^store = .*#store = \"sqlite://$OUT/hallgate.db\"#" benches/bench.toml > "$OUT/bench.toml"
printf '\n[console]\nenabled = true\n' >> "$OUT/bench.toml"
"$BIN" receive --listen 127.0.0.1:18201 --name city-platform >/dev/null 2>&1 & pids+=($!)
RUST_LOG=warn "$BIN" serve --config "$OUT/bench.toml" 2>>"$OUT/hallgate.log" & pids+=($!)
GW=http://127.0.0.1:18090
wait_port "$GW/healthz"
echo "bench-auditor-password" | "$BIN" --config "$OUT/bench.toml" users add bench.auditor --role auditor >/dev/null
curl -s -c "$OUT/jar" -o /dev/null -d 'user=bench.auditor&password=bench-auditor-password' "$GW/console/login"
cookie=$(awk '$6 == "hallgate_console" {print $7}' "$OUT/jar")
[ -n "$cookie" ] || { echo "console login failed" >&2; exit 1; }
curl -sf -H "Cookie: hallgate_console=$cookie" "$GW/console/" | grep -q 投递队列 || { echo "overview not served" >&2; exit 1; }

round() {  # $1 = label; prints records/s accepted by the gateway
  local browse=""
  if [ "$1" = with ]; then
    wrk -t1 -c1 -d"$((DURATION + 2))s" -H "Cookie: hallgate_console=$cookie" "$GW/console/" > "$OUT/pages.txt" & browse=$!
    sleep 1
  fi
  WRK_OUT=$OUT/wrk.txt WRK_LABEL=$1 wrk -t2 -c"$CONNS" -d"${DURATION}s" -s benches/post-record.lua "$GW/v1/records" > /dev/null
  if [ -n "$browse" ]; then wait "$browse"; grep -E "Requests/sec" "$OUT/pages.txt" | awk '{printf "  (the auditor loaded %.0f overview pages/s)\n", $2}' >&2; fi
  awk -v l="$1" '$1 == l {for (i = 2; i <= NF; i++) if ($i ~ /^rps=/) {sub("rps=", "", $i); r = $i}} END {print r}' "$OUT/wrk.txt"
}
round warmup > /dev/null   # the store and the page cache settle first
echo "| pair | without the console (records/s) | with an auditor on the overview (records/s) | with / without |"
echo "|---|---:|---:|---:|"
for p in $(seq "$PAIRS"); do
  # Alternate the order (ABBA) so that a drift over the run favours neither.
  if [ $((p % 2)) = 1 ]; then a=$(round without); b=$(round with); else b=$(round with); a=$(round without); fi
  python3 -c "print(f'| $p | {float($a):,.0f} | {float($b):,.0f} | {float($b)/float($a):.2f} |')"
done
