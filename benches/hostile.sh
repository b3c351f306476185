#!/usr/bin/env bash
# Peak memory of the gateway while 8 bodies of 4 MB arrive at once: tiny JSON items
# (`[{},{},…]`, the shape that grew to ~100 MB of RSS per body), and, for comparison,
# 4 MB of ordinary records (1,000 applications of ~4 KB). Peak RSS is the gateway's
# VmHWM after the bodies were answered; several rounds, alternating the builds.
#
#   bash benches/hostile.sh                                  # this tree's build
#   BEFORE=/path/to/older/hallgate bash benches/hostile.sh   # and an older one beside it
#   ROUNDS=5 bash benches/hostile.sh
#
# Needs curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
OUT=/tmp/hghostile
rm -rf "$OUT"; mkdir -p "$OUT"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
  BIN=target/release/hallgate
fi
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
size = 4 * 1024 * 1024 - 16
open(f"{out}/tiny.json", "w").write("[" + "{}," * (size // 3 - 1) + "{}]")
rec = json.load(open("benches/one-record.json"))
records = []
i = 0
while len(json.dumps(records, ensure_ascii=False).encode()) < size - 8000 and len(records) < 1000:
    r = dict(rec)
    r["case_no"] = f"35{i:016d}"
    r["project_name"] = "许" * 900
    records.append(r)
    i += 1
open(f"{out}/records.json", "w").write(json.dumps(records, ensure_ascii=False))
PY
sed -e "s|/tmp/hgbench|$OUT|" -e "s|max_in_flight = 4096|max_in_flight = 4096\nmax_body_bytes = 4194304\nmax_records_per_body = 1000|" \
  benches/bench.toml > "$OUT/hostile.toml"

wait_port() { for _ in $(seq 100); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

run() { # label binary body-file
  rm -f "$OUT"/hallgate.db*
  RUST_LOG=error "$2" serve --config "$OUT/hostile.toml" 2>>"$OUT/gateway.log" & local gw=$!
  wait_port http://127.0.0.1:18090/healthz
  local pids=()
  for i in $(seq 8); do
    curl -s -o /dev/null -w '%{http_code}\n' -X POST http://127.0.0.1:18090/v1/records \
      -H 'content-type: application/json' -H 'x-hallgate-node: nat-hall' \
      --data-binary @"$3" > "$OUT/code.$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  local peak
  peak=$(awk '/VmHWM/ {print $2}' /proc/$gw/status)
  kill -TERM $gw; wait $gw || true
  echo "$1 $(basename "$3") peak_rss_kib=$peak answers=$(cat "$OUT"/code.* | sort | uniq -c | tr -s ' \n' ' ')"
}

for round in $(seq "$ROUNDS"); do
  for body in "$OUT/tiny.json" "$OUT/records.json"; do
    if [ -n "${BEFORE:-}" ]; then run before "$BEFORE" "$body"; fi
    run after "$BIN" "$body"
  done
done | tee "$OUT/results.txt"
python3 - "$OUT/results.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, body, rss = line.split()[:3]
    rows.setdefault((who, body), []).append(int(rss.split("=")[1]))
for (who, body), v in sorted(rows.items()):
    print(f"{who:7} {body:13} median peak RSS {statistics.median(v)/1024:7.1f} MiB over {len(v)} runs")
PY
