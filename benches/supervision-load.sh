#!/usr/bin/env bash
# What supervision (电子监察) costs intake: the gateway's records accepted/s under
# wrk's load (benches/post-record.lua: one ~1.2 KB application per request, each a new
# case accepted now with a 5-working-day promise, benches/one-record-fresh.json), in
# rounds with supervision off and on. Each round starts the gateway on a fresh store; the rounds alternate in
# ABBA order after a warm-up round, so both meet the same machine, and the ratio of
# each pair is reported. With supervision on, every record also stores its facts in
# its case's supervision row, settled at intake (each case enters supervision on
# time, which needs no event); how many rows have a state at the end of the round,
# and how many are still left for the timer, is reported too. BODY_FILE=benches/one-record.json sends cases accepted in
# April 2026 instead: each is overdue at its first look and raises an alert (a stored
# and routed record of its own), the worst case.
#
#   bash benches/supervision-load.sh            # DURATION=15 (s per round) PAIRS=2 CONNS=64
# Needs wrk (Debian: wrk); installs it when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-15} PAIRS=${PAIRS:-2} CONNS=${CONNS:-64}
OUT=/tmp/hgbench-supervision
rm -rf "$OUT"; mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v sqlite3 >/dev/null || { apt-get update -qq && apt-get install -y -qq sqlite3 >/dev/null; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=target/release/hallgate
fi
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
"$BIN" receive --listen 127.0.0.1:18201 --name city-platform >/dev/null 2>&1 & pids+=($!)
GW=http://127.0.0.1:18090

round() {  # $1 = off|on|warmup; prints records/s accepted by the gateway
  local dir="$OUT/$1-$RANDOM"
  mkdir -p "$dir"
  sed -e "s#^store = .*#store = \"sqlite://$dir/hallgate.db\"#" benches/bench.toml > "$dir/bench.toml"
  [ "$1" = on ] && printf '\n[supervision]\nenabled = true\n' >> "$dir/bench.toml"
  RUST_LOG=warn "$BIN" serve --config "$dir/bench.toml" 2>>"$OUT/hallgate.log" & local gw=$!
  wait_port "$GW/healthz"
  BODY_FILE=${BODY_FILE:-benches/one-record-fresh.json} WRK_OUT=$OUT/wrk.txt WRK_LABEL=$1 wrk -t2 -c"$CONNS" -d"${DURATION}s" -s benches/post-record.lua "$GW/v1/records" > /dev/null
  if [ "$1" = on ]; then
    sqlite3 "$dir/hallgate.db" "SELECT count(*), sum(state IS NOT NULL), sum(due_at = 0) FROM sv_cases" |
      awk -F'|' '{printf "  (supervision: %d cases, %d with a state, %d left for the timer)\n", $1, $2, $3}' >&2
  fi
  kill "$gw"; wait "$gw" 2>/dev/null || true
  awk -v l="$1" '$1 == l {for (i = 2; i <= NF; i++) if ($i ~ /^rps=/) {sub("rps=", "", $i); r = $i}} END {print r}' "$OUT/wrk.txt"
}
round warmup > /dev/null
echo "| pair | supervision off (records/s) | supervision on (records/s) | on / off |"
echo "|---|---:|---:|---:|"
for p in $(seq "$PAIRS"); do
  if [ $((p % 2)) = 1 ]; then a=$(round off); b=$(round on); else b=$(round on); a=$(round off); fi
  python3 -c "print(f'| $p | {float($a):,.0f} | {float($b):,.0f} | {float($b)/float($a):.2f} |')"
done
