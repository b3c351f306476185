//! The rows of the messages being accepted on PostgreSQL, a list per column, and
//! the array (`unnest`) statements that write each table's rows in one go.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Statement, Transaction};

use super::super::supervision::IntakeFact;
use super::Stmts;
use crate::store::{StoreError, plan};

pub(super) const VERSIONS_GET: &str = "SELECT u.s, u.k, u.i, v.version
     FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS u(s, k, i)
     JOIN record_versions v ON v.source = u.s AND v.kind = u.k AND v.identity = u.i";
pub(super) const CASES_GET: &str = "SELECT u.c, u.n, c.region, c.item_code,
            EXISTS (SELECT 1 FROM case_parties p WHERE p.case_no = c.case_no AND p.node = u.n)
     FROM unnest($1::TEXT[], $2::TEXT[]) AS u(c, n) JOIN cases c ON c.case_no = u.c";
pub(super) const TOKEN_GET: &str =
    "SELECT token_sha256 FROM token_ids WHERE node = $1 AND jti = $2";
pub(super) const TOKEN_PUT: &str = "INSERT INTO token_ids (node, jti, token_sha256, exp)
     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[])";
pub(super) const TOKEN_EXPIRE: &str = "DELETE FROM token_ids WHERE exp < $1";
pub(super) const MESSAGES: &str = "INSERT INTO messages (id, source, received_at, content_type,
         idempotency_key, body, body_sha256, response, request_id)
     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[],
                          $6::BYTEA[], $7::TEXT[], $8::TEXT[], $9::TEXT[])";
pub(super) const IDEMPOTENCY: &str = "INSERT INTO idempotency (source, key, message_id, created_at)
     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[])";
pub(super) const RECORDS: &str = "INSERT INTO records (message_id, idx, source, kind, case_no,
         identity, version, status, canonical, sha256, received_at, flags)
     SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                          $6::TEXT[], $7::BIGINT[], $8::TEXT[], $9::TEXT[], $10::TEXT[],
                          $11::BIGINT[], $12::TEXT[])";
pub(super) const VERSIONS: &str =
    "INSERT INTO record_versions (source, kind, identity, version, record_id)
     SELECT u.s, u.k, u.i, u.v, (SELECT id FROM records r WHERE r.message_id = u.m AND r.idx = u.x)
     FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::BIGINT[])
          AS u(s, k, i, v, m, x)
     ON CONFLICT (source, kind, identity)
     DO UPDATE SET version = excluded.version, record_id = excluded.record_id";
pub(super) const DELIVERIES: &str = "INSERT INTO deliveries (record_id, message_id, record_idx,
         destination, case_no, kind, ord_kind, ord_step, state, attempts, next_attempt_at,
         idem_key, created_at, updated_at)
     SELECT (SELECT id FROM records r WHERE r.message_id = u.m AND r.idx = u.x), u.m, u.x,
            u.d, u.c, u.k, u.o, u.s, 'pending', 0, u.t, u.key, u.t, u.t
     FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
                 $7::BIGINT[], $8::BIGINT[], $9::TEXT[]) AS u(m, x, d, c, k, o, s, t, key)";
pub(super) const CASES: &str =
    "INSERT INTO cases (case_no, opened_by, region, item_code, opened_at)
     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])
     ON CONFLICT (case_no) DO UPDATE SET region = coalesce(cases.region, excluded.region),
                                         item_code = coalesce(cases.item_code, excluded.item_code)";
pub(super) const PARTIES: &str = "INSERT INTO case_parties (case_no, node)
     SELECT * FROM unnest($1::TEXT[], $2::TEXT[]) ON CONFLICT DO NOTHING";

/// The rows of the messages being accepted, a list per column, written with one
/// statement per table.
#[derive(Default)]
pub(super) struct Rows<'a> {
    pub(super) tokens: (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>, Vec<i64>),
    pub(super) messages: Messages<'a>,
    pub(super) keys: (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>, Vec<i64>),
    pub(super) records: Records<'a>,
    pub(super) versions: Versions<'a>,
    pub(super) deliveries: Deliveries<'a>,
    pub(super) cases: Cases<'a>,
    pub(super) parties: (Vec<&'a str>, Vec<&'a str>),
    pub(super) party_seen: HashSet<(&'a str, &'a str)>,
    pub(super) facts: Vec<(i64, &'a IntakeFact)>,
}

#[derive(Default)]
pub(super) struct Messages<'a> {
    pub(super) id: Vec<&'a str>,
    pub(super) source: Vec<&'a str>,
    pub(super) at: Vec<i64>,
    pub(super) content_type: Vec<Option<&'a str>>,
    pub(super) key: Vec<Option<&'a str>>,
    pub(super) body: Vec<&'a [u8]>,
    pub(super) sha: Vec<&'a str>,
    pub(super) response: Vec<String>,
    pub(super) request_id: Vec<Option<&'a str>>,
}

#[derive(Default)]
pub(super) struct Records<'a> {
    pub(super) message: Vec<&'a str>,
    pub(super) idx: Vec<i64>,
    pub(super) source: Vec<&'a str>,
    pub(super) kind: Vec<&'static str>,
    pub(super) case_no: Vec<&'a str>,
    pub(super) identity: Vec<&'a str>,
    pub(super) version: Vec<Option<i64>>,
    pub(super) status: Vec<&'static str>,
    pub(super) canonical: Vec<&'a str>,
    pub(super) sha: Vec<&'a str>,
    pub(super) at: Vec<i64>,
    pub(super) flags: Vec<Option<String>>,
}

/// The latest version of each identity: a later record of the same identity in the
/// same statement replaces the earlier (an upsert may touch a row only once).
#[derive(Default)]
pub(super) struct Versions<'a> {
    pub(super) at: HashMap<(&'a str, &'static str, &'a str), usize>,
    pub(super) source: Vec<&'a str>,
    pub(super) kind: Vec<&'static str>,
    pub(super) identity: Vec<&'a str>,
    pub(super) version: Vec<i64>,
    pub(super) message: Vec<&'a str>,
    pub(super) idx: Vec<i64>,
}

#[derive(Default)]
pub(super) struct Deliveries<'a> {
    pub(super) message: Vec<&'a str>,
    pub(super) idx: Vec<i64>,
    pub(super) destination: Vec<&'a str>,
    pub(super) case_no: Vec<&'a str>,
    pub(super) kind: Vec<&'static str>,
    pub(super) rank: Vec<i64>,
    pub(super) step: Vec<i64>,
    pub(super) at: Vec<i64>,
    pub(super) key: Vec<String>,
}

/// Cases to open; a case named again fills in what the first naming left empty, as
/// the upsert does for a case that is already stored.
#[derive(Default)]
pub(super) struct Cases<'a> {
    pub(super) at: HashMap<&'a str, usize>,
    pub(super) case_no: Vec<&'a str>,
    pub(super) opened_by: Vec<&'a str>,
    pub(super) region: Vec<Option<&'a str>>,
    pub(super) item_code: Vec<Option<&'a str>>,
    pub(super) opened_at: Vec<i64>,
}

impl<'a> Rows<'a> {
    pub(super) fn token(&mut self, t: &'a crate::store::TokenUse) {
        self.tokens.0.push(&t.node);
        self.tokens.1.push(&t.jti);
        self.tokens.2.push(&t.token_sha256);
        self.tokens.3.push(t.exp_ms);
    }

    pub(super) fn party(&mut self, case_no: &'a str, node: &'a str) {
        if self.party_seen.insert((case_no, node)) {
            self.parties.0.push(case_no);
            self.parties.1.push(node);
        }
    }

    /// Write every row in one pipelined round trip. The connection keeps the order,
    /// so the records are in before the versions and deliveries that look them up.
    pub(super) async fn write(&self, tx: &Transaction<'_>, st: &Stmts) -> Result<(), StoreError> {
        let expired = plan::token_ids_expired_before(crate::time::now_ms());
        let lines: Vec<String> = self
            .facts
            .iter()
            .map(|(at, f)| super::super::supervision::fact_line(*at, &f.fact))
            .collect();
        let mut out: Vec<Pending<'_>> = Vec::new();
        let mut run = |stmt, n, params| push(&mut out, tx, stmt, n, params);
        let (t, m, k, r) = (&self.tokens, &self.messages, &self.keys, &self.records);
        run(&st.token_put, t.0.len(), vec![&t.0, &t.1, &t.2, &t.3]);
        run(&st.token_expire, t.0.len(), vec![&expired]);
        let ms: [&(dyn ToSql + Sync); 9] = [
            &m.id,
            &m.source,
            &m.at,
            &m.content_type,
            &m.key,
            &m.body,
            &m.sha,
            &m.response,
            &m.request_id,
        ];
        run(&st.messages, m.id.len(), ms.to_vec());
        run(&st.idempotency, k.0.len(), vec![&k.0, &k.1, &k.2, &k.3]);
        let rs: [&(dyn ToSql + Sync); 12] = [
            &r.message,
            &r.idx,
            &r.source,
            &r.kind,
            &r.case_no,
            &r.identity,
            &r.version,
            &r.status,
            &r.canonical,
            &r.sha,
            &r.at,
            &r.flags,
        ];
        run(&st.records, r.message.len(), rs.to_vec());
        let v = &self.versions;
        let vs: [&(dyn ToSql + Sync); 6] = [
            &v.source,
            &v.kind,
            &v.identity,
            &v.version,
            &v.message,
            &v.idx,
        ];
        run(&st.versions, v.source.len(), vs.to_vec());
        let d = &self.deliveries;
        let ds: [&(dyn ToSql + Sync); 9] = [
            &d.message,
            &d.idx,
            &d.destination,
            &d.case_no,
            &d.kind,
            &d.rank,
            &d.step,
            &d.at,
            &d.key,
        ];
        run(&st.deliveries, d.message.len(), ds.to_vec());
        let c = &self.cases;
        let cs: [&(dyn ToSql + Sync); 5] = [
            &c.case_no,
            &c.opened_by,
            &c.region,
            &c.item_code,
            &c.opened_at,
        ];
        run(&st.cases, c.case_no.len(), cs.to_vec());
        let p = &self.parties;
        run(&st.parties, p.0.len(), vec![&p.0, &p.1]);
        for ((_, f), line) in self.facts.iter().zip(&lines) {
            let row = &f.row;
            run(
                &st.sv_intake,
                1,
                vec![
                    &row.case_no,
                    &row.state,
                    &row.transitions,
                    &row.version,
                    &row.item_code,
                    &row.item_name,
                    &row.dept_code,
                    &row.dept_name,
                    &row.region,
                    &row.accepted_ms,
                    &row.deadline_ms,
                    &row.finished_ms,
                    &row.promised_days,
                    &row.used_days,
                    &row.quality,
                    &row.problem,
                    &row.late_steps,
                    &row.updated_ms,
                    &f.due_ms,
                    line,
                ],
            );
        }
        try_join_all(out).await?;
        Ok(())
    }
}

type Pending<'f> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'f>>;

/// Queue a statement of `n` rows (none when there are no rows).
fn push<'f>(
    out: &mut Vec<Pending<'f>>,
    tx: &'f Transaction<'_>,
    stmt: &'f Statement,
    n: usize,
    params: Vec<&'f (dyn ToSql + Sync)>,
) {
    if n > 0 {
        out.push(Box::pin(async move { tx.execute(stmt, &params).await }));
    }
}
