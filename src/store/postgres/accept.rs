//! Accepting messages on PostgreSQL: what a message needs to know is looked up in one
//! pipelined round trip, and its rows go in another, each table's rows as one array
//! (`unnest`) insert.
//!
//! A run of messages that touch different cases, idempotency keys, record identities
//! and token ids is accepted together ([`group`]): their lookups share one round trip
//! and their rows share one insert per table. Every statement costs the server a
//! plan, a send and a wake-up, so this is what lets one instance keep pace with its
//! senders. The messages must be disjoint ([`Claims`]) because a message's lookups
//! run before the rows of the others in its group are written: two messages of one
//! case go in different groups, and the second sees the first. The writer runs a
//! group in one savepoint and, if it fails, accepts its messages again one by one,
//! each in its own, so a bad message still fails alone.

use std::collections::{HashMap, HashSet};

use futures_util::future::{try_join, try_join_all};
use tokio_postgres::Transaction;

use super::rows::Rows;
use super::{Chain, Stmts, advance};
use crate::store::{AcceptOutcome, AcceptResponse, CaseStanding, NewMessage, StoreError, plan};

/// The most messages accepted together.
pub(super) const MAX_GROUP: usize = 256;

/// What a message touches that another message's lookups could read: the messages
/// of one group must not share any of it.
#[derive(Default)]
pub(super) struct Claims {
    cases: HashSet<String>,
    keys: HashSet<(String, String)>,
    identities: HashSet<(String, String, String)>,
    tokens: HashSet<(String, String)>,
}

impl Claims {
    /// Claim what `msg` touches, if nothing of it is claimed yet. A pulled page never
    /// joins a group: it advances its source's cursor in between its lookups and rows.
    pub(super) fn take(&mut self, msg: &NewMessage) -> bool {
        if msg.pull.is_some() {
            return false;
        }
        let key = msg
            .idempotency_key
            .as_ref()
            .map(|k| (msg.source.clone(), k.clone()));
        let token = msg.token.as_ref().map(|t| (t.node.clone(), t.jti.clone()));
        let free = key.as_ref().is_none_or(|k| !self.keys.contains(k))
            && token.as_ref().is_none_or(|t| !self.tokens.contains(t))
            && msg.records.iter().all(|r| {
                !self.cases.contains(&r.case_no)
                    && !self.identities.contains(&(
                        msg.source.clone(),
                        r.kind.as_str().to_string(),
                        r.identity.clone(),
                    ))
            });
        if !free {
            return false;
        }
        self.keys.extend(key);
        self.tokens.extend(token);
        for r in &msg.records {
            self.cases.insert(r.case_no.clone());
            self.identities.insert((
                msg.source.clone(),
                r.kind.as_str().to_string(),
                r.identity.clone(),
            ));
        }
        true
    }
}

/// Accept one message (a pulled page too).
pub(super) async fn one(
    tx: &Transaction<'_>,
    st: &Stmts,
    chain: &mut Chain,
    msg: &NewMessage,
    retain: bool,
) -> Result<AcceptOutcome, StoreError> {
    let Some(adv) = &msg.pull else {
        let mut out = group(tx, st, chain, &[msg], retain).await?;
        return out
            .pop()
            .ok_or_else(|| StoreError::Corrupt("accept: no outcome".into()));
    };
    let looked = look_all(tx, st, &[msg])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("accept: nothing looked up".into()))?;
    let mut rows = Rows::default();
    let stored = match decide(msg, looked, &mut rows, chain)? {
        Decided::Answer(outcome) => {
            rows.write(tx, st).await?;
            return Ok(outcome);
        }
        Decided::Store(s) => s,
    };
    let new_records = stored.statuses.iter().filter(|s| **s == "accepted").count() as i64;
    advance(tx, chain, adv, new_records).await?;
    if !stored.statuses.iter().any(|s| plan::stored(msg, s)) {
        rows.write(tx, st).await?;
        return Ok(AcceptOutcome::Accepted(stored.response));
    }
    let response = rows.add(msg, stored, chain, retain)?;
    rows.write(tx, st).await?;
    Ok(AcceptOutcome::Accepted(response))
}

/// Accept messages that [`Claims`] found disjoint (none of them pulled): two round
/// trips for all of them. On an error nothing is undone here; the caller rolls back.
pub(super) async fn group(
    tx: &Transaction<'_>,
    st: &Stmts,
    chain: &mut Chain,
    msgs: &[&NewMessage],
    retain: bool,
) -> Result<Vec<AcceptOutcome>, StoreError> {
    let looked = look_all(tx, st, msgs).await?;
    let mut rows = Rows::default();
    let mut out = Vec::with_capacity(msgs.len());
    for (msg, looked) in msgs.iter().zip(looked) {
        out.push(match decide(msg, looked, &mut rows, chain)? {
            Decided::Answer(outcome) => outcome,
            Decided::Store(s) => AcceptOutcome::Accepted(rows.add(msg, s, chain, retain)?),
        });
    }
    rows.write(tx, st).await?;
    Ok(out)
}

/// What one round trip found out about a message.
struct Looked {
    /// The hash of the token that first used the message's `jti`, when it was used.
    token: Option<String>,
    /// The response stored under the message's idempotency key.
    prior: Option<String>,
    stored: Vec<Option<i64>>,
    unchanged: Vec<bool>,
    standing: Vec<CaseStanding>,
}

/// Look up what the messages need to know, in one pipelined round trip: the stored
/// versions of their identities and where their senders stand with their cases as
/// one array query each (a statement per record cost a plan each), the tokens and
/// idempotency keys per message.
async fn look_all(
    tx: &Transaction<'_>,
    st: &Stmts,
    msgs: &[&NewMessage],
) -> Result<Vec<Looked>, StoreError> {
    let singles = try_join_all(msgs.iter().map(|msg| look_one(tx, st, msg)));
    let (mut vs, mut vk, mut vi) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cc, mut cn) = (Vec::new(), Vec::new());
    let mut asked: HashSet<(&str, &str)> = HashSet::new();
    for m in msgs {
        for r in &m.records {
            if r.version.is_some() {
                vs.push(m.source.as_str());
                vk.push(r.kind.as_str());
                vi.push(r.identity.as_str());
            }
            // A case named twice is asked once.
            if asked.insert((&r.case_no, &m.source)) {
                cc.push(r.case_no.as_str());
                cn.push(m.source.as_str());
            }
        }
    }
    let versions = async {
        match vs.is_empty() {
            true => Ok(Vec::new()),
            false => tx.query(&st.versions_get, &[&vs, &vk, &vi]).await,
        }
    };
    let cases = async {
        match cc.is_empty() {
            true => Ok(Vec::new()),
            false => tx.query(&st.cases_get, &[&cc, &cn]).await,
        }
    };
    let (singles, (versions, cases)) = try_join(singles, try_join(versions, cases)).await?;
    let versions: HashMap<(&str, &str, &str), i64> = versions
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
        .collect();
    let cases: HashMap<(&str, &str), CaseStanding> = cases
        .iter()
        .map(|r| {
            let standing = match r.get::<_, bool>(4) {
                true => CaseStanding::Party,
                false => CaseStanding::Other {
                    region: r.get(2),
                    item_code: r.get(3),
                },
            };
            ((r.get(0), r.get(1)), standing)
        })
        .collect();
    Ok(msgs
        .iter()
        .zip(singles)
        .map(|(m, (token, prior, unchanged))| Looked {
            token,
            prior,
            stored: m
                .records
                .iter()
                .map(|r| {
                    r.version.and_then(|_| {
                        let at = (m.source.as_str(), r.kind.as_str(), r.identity.as_str());
                        versions.get(&at).copied()
                    })
                })
                .collect(),
            unchanged,
            standing: m
                .records
                .iter()
                .map(|r| {
                    let at = (r.case_no.as_str(), m.source.as_str());
                    cases.get(&at).cloned().unwrap_or(CaseStanding::New)
                })
                .collect(),
        })
        .collect())
}

/// A message's own lookups: its token, its idempotency key and, for a pulled page,
/// whether records without a version are unchanged (the latest stored record of the
/// same identity has the same content).
async fn look_one(
    tx: &Transaction<'_>,
    st: &Stmts,
    msg: &NewMessage,
) -> Result<(Option<String>, Option<String>, Vec<bool>), tokio_postgres::Error> {
    let token = async {
        match &msg.token {
            Some(t) => tx
                .query_opt(&st.token_get, &[&t.node, &t.jti])
                .await
                .map(|row| row.map(|row| row.get::<_, String>(0))),
            None => Ok(None),
        }
    };
    let prior = async {
        match &msg.idempotency_key {
            Some(key) => tx
                .query_opt(&st.idem_get, &[&msg.source, key])
                .await
                .map(|row| row.map(|row| row.get::<_, String>(0))),
            None => Ok(None),
        }
    };
    let unchanged = try_join_all(msg.records.iter().map(|r| async move {
        match (&msg.pull, r.version) {
            (Some(_), None) => tx
                .query_opt(
                    &st.latest_sha,
                    &[&msg.source, &r.kind.as_str(), &r.identity],
                )
                .await
                .map(|row| row.is_some_and(|row| row.get::<_, &str>(0) == r.sha256)),
            _ => Ok(false),
        }
    }));
    let ((token, prior), unchanged) = try_join(try_join(token, prior), unchanged).await?;
    Ok((token, prior, unchanged))
}

enum Decided {
    /// The message is answered without storing it (a replay, a refusal).
    Answer(AcceptOutcome),
    Store(Box<ToStore>),
}

struct ToStore {
    statuses: Vec<&'static str>,
    response: AcceptResponse,
    response_json: String,
    received: crate::event::Event,
    standing: Vec<CaseStanding>,
}

/// Decide a message from what was looked up. The token's row and the events of a
/// refusal are added here; a message to store is added by [`Rows::add`].
fn decide<'a>(
    msg: &'a NewMessage,
    looked: Looked,
    rows: &mut Rows<'a>,
    chain: &mut Chain,
) -> Result<Decided, StoreError> {
    if let Some(t) = &msg.token {
        // Under the chain head lock: one instance at a time decides.
        match &looked.token {
            Some(sha) if *sha != t.token_sha256 => {
                chain.push(plan::replay_event(msg))?;
                return Ok(Decided::Answer(AcceptOutcome::TokenReplayed));
            }
            Some(_) => {}
            None => rows.token(t),
        }
    }
    if let Some(resp) = looked.prior {
        let parsed: AcceptResponse = serde_json::from_str(&resp)
            .map_err(|e| StoreError::Corrupt(format!("stored response: {e}")))?;
        return Ok(Decided::Answer(AcceptOutcome::Replayed(parsed)));
    }
    // A stale record refuses the whole body.
    Ok(
        match plan::accept(msg, &looked.stored, &looked.unchanged, &looked.standing) {
            plan::AcceptPlan::Stale { stale, event } => {
                chain.push(event)?;
                Decided::Answer(AcceptOutcome::Stale(stale))
            }
            plan::AcceptPlan::NotParty { records, event } => {
                chain.push(event)?;
                Decided::Answer(AcceptOutcome::NotParty(records))
            }
            plan::AcceptPlan::Store {
                statuses,
                response,
                response_json,
                received,
            } => Decided::Store(Box::new(ToStore {
                statuses,
                response,
                response_json,
                received,
                standing: looked.standing,
            })),
        },
    )
}

impl<'a> Rows<'a> {
    /// Add a message to store, and push its events. Returns the sender's answer.
    fn add(
        &mut self,
        msg: &'a NewMessage,
        s: Box<ToStore>,
        chain: &mut Chain,
        retain: bool,
    ) -> Result<AcceptResponse, StoreError> {
        let m = &mut self.messages;
        m.id.push(&msg.id);
        m.source.push(&msg.source);
        m.at.push(msg.received_at_ms);
        m.content_type.push(msg.content_type.as_deref());
        m.key.push(msg.idempotency_key.as_deref());
        m.body.push(if retain { msg.body.as_ref() } else { &[] });
        m.sha.push(&msg.body_sha256);
        m.response.push(s.response_json);
        m.request_id.push(msg.request_id.as_deref());
        if let Some(key) = &msg.idempotency_key {
            self.keys.0.push(&msg.source);
            self.keys.1.push(key);
            self.keys.2.push(&msg.id);
            self.keys.3.push(msg.received_at_ms);
        }
        chain.push(s.received)?;
        for ((r, status), standing) in msg.records.iter().zip(&s.statuses).zip(&s.standing) {
            if !plan::stored(msg, status) {
                continue;
            }
            let idx = r.index as i64;
            let kind = r.kind.as_str();
            let rec = &mut self.records;
            rec.message.push(&msg.id);
            rec.idx.push(idx);
            rec.source.push(&msg.source);
            rec.kind.push(kind);
            rec.case_no.push(&r.case_no);
            rec.identity.push(&r.identity);
            rec.version.push(r.version);
            rec.status.push(status);
            rec.canonical.push(&r.canonical);
            rec.sha.push(&r.sha256);
            rec.at.push(msg.received_at_ms);
            rec.flags.push(plan::flags_column(&r.flags));
            // New cases are opened; the sender and the destinations become parties.
            if *standing != CaseStanding::Party {
                let c = &mut self.cases;
                match c.at.get(r.case_no.as_str()) {
                    Some(&i) => {
                        c.region[i] = c.region[i].or(r.region.as_deref());
                        c.item_code[i] = c.item_code[i].or(r.item_code.as_deref());
                    }
                    None => {
                        c.at.insert(&r.case_no, c.case_no.len());
                        c.case_no.push(&r.case_no);
                        c.opened_by.push(&msg.source);
                        c.region.push(r.region.as_deref());
                        c.item_code.push(r.item_code.as_deref());
                        c.opened_at.push(msg.received_at_ms);
                    }
                }
                self.party(&r.case_no, &msg.source);
            }
            chain.push(plan::accepted_event(msg, r, status))?;
            if *status != "accepted" {
                continue;
            }
            if let Some(version) = r.version {
                let v = &mut self.versions;
                let at = (msg.source.as_str(), kind, r.identity.as_str());
                let i = *v.at.entry(at).or_insert_with(|| {
                    v.source.push(&msg.source);
                    v.kind.push(kind);
                    v.identity.push(&r.identity);
                    v.version.push(version);
                    v.message.push(&msg.id);
                    v.idx.push(idx);
                    v.source.len() - 1
                });
                (v.version[i], v.message[i], v.idx[i]) = (version, &msg.id, idx);
            }
            for dest in &r.destinations {
                let d = &mut self.deliveries;
                d.message.push(&msg.id);
                d.idx.push(idx);
                d.destination.push(dest);
                d.case_no.push(&r.case_no);
                d.kind.push(kind);
                d.rank.push(r.kind.rank());
                d.step.push(r.step_no);
                d.at.push(msg.received_at_ms);
                d.key.push(plan::delivery_key(msg, r, dest));
                self.party(&r.case_no, dest);
            }
            if let Some(f) = &r.fact {
                self.facts.push((msg.received_at_ms, f));
            }
            if !r.flags.is_empty() {
                chain.push(plan::flagged_event(msg, r))?;
            }
            chain.push(plan::routed_event(msg, r))?;
        }
        Ok(s.response)
    }
}
