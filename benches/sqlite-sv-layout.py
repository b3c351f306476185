#!/usr/bin/env python3
"""Why SQLite's sv_cases is a rowid table: bare inserts of supervision rows (~600
bytes each, most of it the facts line) in transactions of 100, as intake writes them,
into the same columns and indexes laid out three ways:

- WITHOUT ROWID, keyed by case_no (the first layout);
- a rowid table with a UNIQUE case_no (the layout shipped);
- WITHOUT ROWID without the two secondary indexes (what the indexes cost).

Case numbers are random, as new cases from many halls interleave. Each layout gets a
fresh file in WAL mode with synchronous=NORMAL, like the gateway's store. Reported:
rows/s of each, and each as a ratio of the first, measured in the same run.

    python3 benches/sqlite-sv-layout.py            # ROWS=100000
"""
import json
import os
import random
import sqlite3
import tempfile
import time

ROWS = int(os.environ.get("ROWS", "100000"))
COLUMNS = """state TEXT, transitions INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 0,
    item_code TEXT, item_name TEXT, dept_code TEXT, dept_name TEXT, region TEXT, accepted_at INTEGER,
    deadline INTEGER, finished_at INTEGER, promised_days REAL, used_days REAL,
    quality TEXT NOT NULL DEFAULT '', problem TEXT, late_steps TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL DEFAULT 0, due_at INTEGER, facts TEXT NOT NULL DEFAULT ''"""
INDEXES = """CREATE INDEX sv_cases_due ON sv_cases (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX sv_cases_state ON sv_cases (state, dept_code);"""
LAYOUTS = [
    ("WITHOUT ROWID", f"CREATE TABLE sv_cases (case_no TEXT PRIMARY KEY, {COLUMNS}) WITHOUT ROWID;" + INDEXES),
    ("rowid, UNIQUE case_no", f"CREATE TABLE sv_cases (id INTEGER PRIMARY KEY, case_no TEXT NOT NULL UNIQUE, {COLUMNS});" + INDEXES),
    ("WITHOUT ROWID, no secondary index", f"CREATE TABLE sv_cases (case_no TEXT PRIMARY KEY, {COLUMNS}) WITHOUT ROWID;"),
]
FACT = json.dumps(
    {"k": "application", "item_code": "11350200MB0001", "item_name": "建设工程规划许可证核发",
     "dept_code": "11350200003602000F", "dept_name": "厦门市自然资源和规划局", "region": "350205",
     "accepted_at": 1775008800000, "promise": [5, "workday"], "received_at": 1775008800000},
    ensure_ascii=False,
)
INSERT = """INSERT INTO sv_cases (case_no, state, transitions, version, item_code, item_name, dept_code,
    dept_name, region, accepted_at, deadline, finished_at, promised_days, used_days, quality, problem,
    late_steps, updated_at, due_at, facts)
    VALUES (?, 'on_time', 0, 1, '11350200MB0001', '建设工程规划许可证核发', '11350200003602000F',
            '厦门市自然资源和规划局', '350205', 1775008800000, 1775600000000, NULL, 5.0, 0.1, '', NULL,
            '', 1775008800000, ?, ?)
    ON CONFLICT (case_no) DO UPDATE SET version = sv_cases.version + 1, due_at = 0,
        facts = sv_cases.facts || excluded.facts"""


def run(ddl: str, keys: list, folder: str, n: int) -> float:
    path = os.path.join(folder, f"layout{n}.db")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(ddl)
    line = f"1775008800000\t{FACT}\n"
    start = time.perf_counter()
    for b in range(0, len(keys), 100):
        db.execute("BEGIN")
        for k in keys[b:b + 100]:
            db.execute(INSERT, (k, 1775500000000 + random.randrange(10**6), line))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return len(keys) / elapsed


def main() -> None:
    keys = [f"3502052604{random.randrange(10**8):08d}" for _ in range(ROWS)]
    with tempfile.TemporaryDirectory() as folder:
        rates = [(name, run(ddl, keys, folder, i)) for i, (name, ddl) in enumerate(LAYOUTS)]
    print("| layout | rows/s | ratio to WITHOUT ROWID |")
    print("|---|---:|---:|")
    for name, rate in rates:
        print(f"| {name} | {rate:,.0f} | {rate / rates[0][1]:.2f} |")


if __name__ == "__main__":
    main()
