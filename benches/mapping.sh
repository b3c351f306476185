#!/usr/bin/env bash
# Mapping throughput on 50,000-record workloads from benches/baselines/gen_records.py:
# `hallgate map` (decode + validate + print JSON lines) against the same mapping as
# XSLT 1.0 under xsltproc and as a jq program, all in one run; then the engine alone
# against the raw decoders in criterion (`cargo bench --bench engine`).
#
#   bash benches/mapping.sh               # 3 runs each, medians
#   RUNS=5 COUNT=50000 bash benches/mapping.sh
#
# Needs python3, xsltproc and jq (Debian: xsltproc jq); installs them when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} COUNT=${COUNT:-50000} BASE=benches/baselines
DATA=target/bench-data
mkdir -p "$DATA"
if ! command -v xsltproc >/dev/null || ! command -v jq >/dev/null; then
  apt-get update -qq && apt-get install -y -qq xsltproc jq >/dev/null
fi
GEN="python3 $BASE/gen_records.py --count $COUNT --seed 1"
[ -s "$DATA/zj-utf8.xml" ] || $GEN --format zj-xml > "$DATA/zj-utf8.xml"
[ -s "$DATA/zj-gb18030.xml" ] || $GEN --format zj-xml --encoding gb18030 > "$DATA/zj-gb18030.xml"
[ -s "$DATA/nat.jsonl" ] || $GEN --format nat-jsonl > "$DATA/nat.jsonl"
cargo build --release -q
BIN=target/release/hallgate

# median wall seconds of RUNS runs of a command (stdout discarded)
median() {
  local times=()
  for _ in $(seq "$RUNS"); do
    local s e
    s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N)
    times+=("$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

row() { # label file seconds
  local mb
  mb=$(stat -c %s "$2" | awk '{print $1/1048576}')
  awk -v l="$1" -v n="$COUNT" -v s="$3" -v mb="$mb" \
    'BEGIN { printf "%-44s %8.3f s %10.0f records/s %8.1f MB/s\n", l, s, n/s, mb/s }'
}

# the outputs must be right before they are timed
"$BIN" map --mapping mappings/zj/application.toml "$DATA/zj-utf8.xml" | wc -l | grep -qx "$COUNT"
"$BIN" map --mapping mappings/zj/application.toml "$DATA/zj-gb18030.xml" | wc -l | grep -qx "$COUNT"
"$BIN" map --mapping mappings/nat/application.toml "$DATA/nat.jsonl" | wc -l | grep -qx "$COUNT"
cmp <("$BIN" map --mapping mappings/zj/application.toml "$DATA/zj-utf8.xml") \
    <("$BIN" map --mapping mappings/zj/application.toml "$DATA/zj-gb18030.xml")

echo "== $COUNT records, median of $RUNS runs, $(nproc) cores"
t1=$(median "$BIN" map --mapping mappings/zj/application.toml "$DATA/zj-utf8.xml")
t2=$(median xsltproc "$BASE/to-canonical.xsl" "$DATA/zj-utf8.xml")
t3=$(median "$BIN" map --mapping mappings/zj/application.toml "$DATA/zj-gb18030.xml")
t4=$(median xsltproc "$BASE/to-canonical.xsl" "$DATA/zj-gb18030.xml")
t5=$(median "$BIN" map --mapping mappings/nat/application.toml "$DATA/nat.jsonl")
t6=$(median jq -c -f "$BASE/to-canonical.jq" "$DATA/nat.jsonl")
t7=$(median jq -c . "$DATA/nat.jsonl")
s1=$(median "$BIN" map --jobs 1 --mapping mappings/zj/application.toml "$DATA/zj-utf8.xml")
s3=$(median "$BIN" map --jobs 1 --mapping mappings/zj/application.toml "$DATA/zj-gb18030.xml")
s5=$(median "$BIN" map --jobs 1 --mapping mappings/nat/application.toml "$DATA/nat.jsonl")
row "hallgate map  zj-xml UTF-8" "$DATA/zj-utf8.xml" "$t1"
row "xsltproc      zj-xml UTF-8" "$DATA/zj-utf8.xml" "$t2"
row "hallgate map  zj-xml GB18030" "$DATA/zj-gb18030.xml" "$t3"
row "xsltproc      zj-xml GB18030" "$DATA/zj-gb18030.xml" "$t4"
row "hallgate map  nat-jsonl" "$DATA/nat.jsonl" "$t5"
row "jq mapping    nat-jsonl" "$DATA/nat.jsonl" "$t6"
row "jq -c .       nat-jsonl (parse and print)" "$DATA/nat.jsonl" "$t7"
row "hallgate map --jobs 1  zj-xml UTF-8" "$DATA/zj-utf8.xml" "$s1"
row "hallgate map --jobs 1  zj-xml GB18030" "$DATA/zj-gb18030.xml" "$s3"
row "hallgate map --jobs 1  nat-jsonl" "$DATA/nat.jsonl" "$s5"
awk -v a="$t2" -v b="$t1" -v c="$t4" -v d="$t3" -v e="$t6" -v f="$t5" -v g="$t7" 'BEGIN {
  printf "ratios: vs xsltproc UTF-8 %.1fx, vs xsltproc GB18030 %.1fx, vs jq mapping %.1fx, vs jq -c . %.1fx\n", a/b, c/d, e/f, g/f }'
awk -v a="$t2" -v b="$s1" -v c="$t4" -v d="$s3" -v e="$t6" -v f="$s5" 'BEGIN {
  printf "one thread (--jobs 1): vs xsltproc UTF-8 %.1fx, vs xsltproc GB18030 %.1fx, vs jq mapping %.1fx\n", a/b, c/d, e/f }'
for f in zj-utf8.xml nat.jsonl; do
  m=mappings/zj/application.toml; [ "$f" = nat.jsonl ] && m=mappings/nat/application.toml
  /usr/bin/time -f "peak RSS hallgate map $f: %M KiB" "$BIN" map --mapping "$m" "$DATA/$f" > /dev/null
done
/usr/bin/time -f "peak RSS xsltproc zj-utf8.xml: %M KiB" xsltproc "$BASE/to-canonical.xsl" "$DATA/zj-utf8.xml" > /dev/null

echo "== engine alone vs raw decoders (criterion)"
cargo bench -q --bench engine 2>/dev/null | grep -E '^(zj|nat)|thrpt' || true
