#!/usr/bin/env bash
# Token verification cost: accepted records/s with auth disabled (development header),
# with one token reused (verified once, then cached) and with a fresh token on every
# request (each verified, its jti recorded), alternating, in one run.
#
#   bash benches/auth.sh          # ROUNDS=3 DURATION=15s CONNS=64
#
# Tokens are ES256, made by `hallgate token issue --count` with a key from
# `hallgate keys generate`; wrk runs two threads.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-15s} CONNS=${CONNS:-64}
OUT=/tmp/hgbench-auth
rm -rf "$OUT"; mkdir -p "$OUT"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
BIN=$PWD/target/release/hallgate
"$BIN" keys generate --out "$OUT/keys/nat-hall.key.pem" >/dev/null
sed -e "s#^store = .*#store = \"sqlite://$OUT/hallgate.db\"#" benches/bench.toml > "$OUT/open.toml"
sed -e "s#^trust_node_header = true#trust_node_header = false#" "$OUT/open.toml" > "$OUT/tokens.toml"
cat >> "$OUT/tokens.toml" <<TOML

[nodes.nat-hall.auth]
algorithms = ["ES256"]
keys = ["keys/nat-hall.pub.pem"]
TOML
echo "making tokens…" >&2
"$BIN" --config "$OUT/tokens.toml" token issue --node nat-hall --key "$OUT/keys/nat-hall.key.pem" \
  --ttl 50m --count 150000 > "$OUT/tokens.txt"
RESULTS=$OUT/results.txt
: > "$RESULTS"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_up() { for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/healthz >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
"$BIN" receive --listen 127.0.0.1:18201 --name city-platform >/dev/null 2>&1 & pids+=($!)

run() { # label config script [mode]
  rm -f "$OUT"/hallgate.db*
  RUST_LOG=warn "$BIN" serve --config "$2" 2>>"$OUT/hallgate.log" & local gw=$!; pids+=($gw)
  wait_up
  TOKENS_FILE=$OUT/tokens.txt TOKEN_MODE=${4:-same} WRK_OUT=$RESULTS WRK_LABEL="$1" \
    wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$3" http://127.0.0.1:18090/v1/records | grep SUMMARY || true
  kill -TERM $gw; wait $gw || true
}

for round in $(seq "$ROUNDS"); do
  run no-auth "$OUT/open.toml" benches/post-record.lua
  run token-cached "$OUT/tokens.toml" benches/post-token.lua same
  run token-each-request "$OUT/tokens.toml" benches/post-token.lua each
done

python3 - "$RESULTS" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who = line.split()[0]
    rows.setdefault(who, []).append(dict(re.findall(r'(\w+)=([\d.]+)', line)))
med = lambda who, k: statistics.median(float(r[k]) for r in rows[who])
for who in ("no-auth", "token-cached", "token-each-request"):
    errs = sum(int(r['errors_status']) for r in rows[who])
    print(f"{who:20} median of {len(rows[who])}: {med(who,'rps'):8.0f} req/s  p50 {med(who,'p50_ms'):6.2f} ms  p99 {med(who,'p99_ms'):6.2f} ms  non-2xx {errs}")
print(f"ratio cached / no auth: {med('token-cached','rps')/med('no-auth','rps'):.2f}")
print(f"ratio each request / no auth: {med('token-each-request','rps')/med('no-auth','rps'):.2f}")
PY
