"""Every row the gateway writes for a record end to end, for benches/sqlite-ceiling.py
(`full PER_MESSAGE`). Returns the records, the seconds, and the seconds spent in SQLite
(building the rows in Python is a third of the run; the ceiling is counted without it).
Rows: the message, the record and its version, the delivery, the case
and its parties, five audit events, and the delivery's completion."""
import json
import os
import time

HASH = os.urandom(32)
HEX = HASH.hex() * 2


def audit(seq, at, event, case, kind, mid, did, detail):
    return (seq, at, event, "nat-hall", case, kind, mid, did, json.dumps(detail), HASH)


def run(db, canonical, seconds, per_commit, per_message):
    n, seq, done, in_db = 0, 0, [], 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        at = int(time.time() * 1000)
        msgs, recs, vers, dels, cases, parties, events, completed = [], [], [], [], [], [], [], []
        for i in range(per_commit):
            r = n + i + 1
            case = "35%016d" % r
            mid = "m%d" % ((r - 1) // per_message)
            idx = (r - 1) % per_message
            if idx == 0:
                msgs.append((mid, "nat-hall", at, "application/json", None,
                             (canonical + ",") * per_message, HEX[:64],
                             json.dumps({"message_id": mid, "records": [{"index": 0, "case_no": case}]}), mid))
                seq += 1
                events.append(audit(seq, at, "received", None, None, mid, None,
                                    {"body_bytes": 1276 * per_message, "body_sha256": HEX[:64],
                                     "content_type": "application/json", "records": per_message,
                                     "request_id": mid}))
            recs.append((r, mid, idx, "nat-hall", "application", case, case, 3, "stored",
                         canonical.replace("CASENO", case), HEX[:64], at))
            vers.append(("nat-hall", "application", case, 3, r))
            dels.append((r, r, mid, idx, "city-platform", case, "application", 0, 0, "pending", at,
                         "hg-%s-%d-city-platform" % (mid, idx), at, at))
            cases.append((case, "nat-hall", "350205", "000000", at))
            parties += [(case, "nat-hall"), (case, "city-platform")]
            seq += 2
            events.append(audit(seq - 1, at, "accepted", case, "application", mid, None,
                                {"index": idx, "label": "application", "record_sha256": HEX[:64],
                                 "request_id": mid, "status": "accepted", "version": 3}))
            events.append(audit(seq, at, "routed", case, "application", mid, None,
                                {"destinations": ["city-platform"], "index": idx, "request_id": mid}))
        for (r, mid, idx, case) in done:
            completed.append((at, '{"code":"0","msg":"接收成功"}', at, at, r))
            seq += 2
            events.append(audit(seq - 1, at, "attempted", case, "application", mid, r,
                                {"attempt": 1, "duration_ms": 1, "index": idx, "request_sha256": HEX[:64],
                                 "status": 200}))
            events.append(audit(seq, at, "delivered", case, "application", mid, r,
                                {"attempt": 1, "duplicate": False, "duration_ms": 1, "index": idx,
                                 "receipt_sha256": HEX[:64], "status": 200}))
        t0 = time.perf_counter()
        db.execute("BEGIN")
        db.executemany("INSERT INTO messages (id, source, received_at, content_type, idempotency_key, body,"
                       " body_sha256, response, request_id) VALUES (?,?,?,?,?,?,?,?,?)", msgs)
        db.executemany("INSERT INTO records (id, message_id, idx, source, kind, case_no, identity, version,"
                       " status, canonical, sha256, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", recs)
        db.executemany("INSERT INTO record_versions (source, kind, identity, version, record_id)"
                       " VALUES (?,?,?,?,?)", vers)
        db.executemany("INSERT INTO deliveries (id, record_id, message_id, record_idx, destination, case_no, kind,"
                       " ord_kind, ord_step, state, next_attempt_at, idem_key, created_at, updated_at)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", dels)
        db.executemany("INSERT INTO cases (case_no, opened_by, region, item_code, opened_at) VALUES (?,?,?,?,?)",
                       cases)
        db.executemany("INSERT INTO case_parties (case_no, node) VALUES (?,?)", parties)
        db.executemany("UPDATE deliveries SET state = 'delivered', attempts = 1, last_status = 200,"
                       " next_attempt_at = ?, receipt = ?, updated_at = ?, delivered_at = ? WHERE id = ?",
                       completed)
        db.executemany("INSERT INTO audit (seq, at, event, node, case_no, kind, message_id, delivery_id,"
                       " detail, hash) VALUES (?,?,?,?,?,?,?,?,?,?)", events)
        db.execute("COMMIT")
        in_db += time.perf_counter() - t0
        done = [(d[0], d[2], d[3], d[5]) for d in dels]
        n += per_commit
    return n, time.perf_counter() - start, in_db
