#!/usr/bin/env python3
"""The SQLite group-commit ceiling for the gateway's own schema: rows of a bare batched
insert per second, with the gateway's pragmas (WAL, synchronous = FULL).

  python3 benches/sqlite-ceiling.py SCHEMA_DB [SECONDS] [ROWS_PER_COMMIT] [full PER_MESSAGE]

SCHEMA_DB is a database the gateway made (its tables and indexes are copied into a
fresh file beside it). Each canonical record becomes what the gateway writes at the
least for it: one `records` row (the ~1.2 KB canonical text of benches/one-record.json)
and one `deliveries` row, ROWS_PER_COMMIT records per transaction. Python's sqlite3 is
the C library with a thin loop (executemany); the figure is a floor of what a bare
insert reaches, and the gateway does more per record (message, audit chain, routing).

With `full PER_MESSAGE`, each record costs every row the gateway writes for it end to
end, with no HTTP, mapping or hashing: its message (one per PER_MESSAGE records, the
body kept), `records`, `record_versions`, `deliveries`, `cases` and two `case_parties`
rows, the audit events received (per message), accepted, routed, attempted and
delivered with details of their real sizes, and its delivery's completion (the UPDATE
to delivered, done in the next commit as the gateway's exchange does). That is the
ceiling of the whole schema: what the store alone allows end to end. It is counted
over the time spent in SQLite's calls (BEGIN to COMMIT), not building the rows.
"""
import os
import sqlite3
import sys
import time

src, seconds, per_commit = sys.argv[1], float(sys.argv[2] if len(sys.argv) > 2 else 10), int(
    sys.argv[3] if len(sys.argv) > 3 else 1000)
target = os.path.join(os.path.dirname(os.path.abspath(src)), "ceiling.db")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(target + suffix):
        os.remove(target + suffix)
schema = [sql for (sql,) in sqlite3.connect(src).execute(
    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY type DESC")]
db = sqlite3.connect(target, isolation_level=None)
db.execute("PRAGMA journal_mode = WAL")
db.execute("PRAGMA synchronous = FULL")
for sql in schema:
    db.execute(sql)
canonical = open(os.path.join(os.path.dirname(__file__), "one-record.json")).read().strip()
n = 0
if len(sys.argv) > 5 and sys.argv[4] == "full":
    import full_ceiling
    n, elapsed, in_db = full_ceiling.run(db, canonical, seconds, per_commit, int(sys.argv[5]))
    print(f"sqlite ceiling, whole schema: {n} records, {per_commit} per commit, {sys.argv[5]} per message, "
          f"{in_db:.1f} s in SQLite of {elapsed:.1f} s: {n / in_db:.0f} records/s")
    sys.exit(0)
start = time.perf_counter()
while time.perf_counter() - start < seconds:
    rows = []
    deliveries = []
    for i in range(per_commit):
        case = "35%016d" % (n + i)
        rows.append((n + i + 1, "m%d" % ((n + i) // 100), i % 100, "nat-hall", "application", case, case,
                     "stored", canonical.replace("CASENO", case), "0" * 64, 0))
        deliveries.append((n + i + 1, "m%d" % ((n + i) // 100), i % 100, "city-platform", case, "application",
                           0, 0, "pending", 0, "k%d" % (n + i), 0, 0))
    db.execute("BEGIN")
    db.executemany("INSERT INTO records (id, message_id, idx, source, kind, case_no, identity, status, canonical,"
                   " sha256, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.executemany("INSERT INTO deliveries (record_id, message_id, record_idx, destination, case_no, kind, ord_kind,"
                   " ord_step, state, next_attempt_at, idem_key, created_at, updated_at)"
                   " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", deliveries)
    db.execute("COMMIT")
    n += per_commit
elapsed = time.perf_counter() - start
print(f"sqlite ceiling: {n} records (a records row and a deliveries row each) in {elapsed:.1f} s, "
      f"{per_commit} per commit: {n / elapsed:.0f} records/s")
