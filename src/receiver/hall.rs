//! A simulated provincial online hall (省网上办事大厅) for `hallgate demo`, the tests
//! and the benchmarks: a real HTTP server on loopback with the interface docs/sync.md
//! describes.
//!
//! - `POST /records`: deliveries from the gateway (a [`Receiver`], with its scripts
//!   and Idempotency-Key handling);
//! - `GET /api/cases`: the cases applied for at the hall itself, in the national
//!   platform's JSON, by time window (`from`, `to`, `page`, `size`), by sequence
//!   (`after`, `size`) or by token (`cursor`, `size`), with `X-Next-Cursor` and
//!   `X-Total-Count`;
//! - `GET /api/holdings` and `GET /api/holdings/count`: everything it holds (its own
//!   cases and what it received), as reconciliation summaries;
//! - `GET /api/items`: its item catalogue (事项目录).

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Receiver, ReceiverError};
use crate::record::{Kind, identity_of};
use crate::store::CatalogueItem;
use crate::time::{now_ms, parse_time, rfc3339};

/// A case applied for at the hall.
#[derive(Debug, Clone)]
struct Own {
    seq: i64,
    at_ms: i64,
    native: Value,
    /// The canonical record read from `native` (for holdings).
    canonical: Value,
}

#[derive(Default)]
struct HallState {
    own: Vec<Own>,
    items: Vec<CatalogueItem>,
    next_seq: i64,
    /// Added to the hall's clock (a hall whose clock is behind has a negative skew).
    skew_ms: i64,
    mappings: Option<crate::mapping::MappingSet>,
    /// Answer the next N pulls with 503.
    fail_pulls: u32,
    pulls: u64,
    /// Answer the holdings list with the records themselves, in its own format,
    /// instead of summaries.
    native_holdings: bool,
    /// Bumped whenever its own cases change.
    generation: u64,
    /// Holdings as last computed, with the (generation, arrivals, accepted) they
    /// were computed at: a reconciliation reads them page by page.
    holdings: Option<HoldingsCache>,
}

type HoldingsCache = ((u64, usize, u64), Arc<Vec<(i64, Value)>>);

/// A running simulated provincial hall.
#[derive(Clone)]
pub struct Hall {
    pub receiver: Receiver,
    state: Arc<Mutex<HallState>>,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    from: Option<String>,
    to: Option<String>,
    page: Option<usize>,
    size: Option<usize>,
    after: Option<i64>,
    cursor: Option<String>,
}

impl Hall {
    /// Start on `addr` (`127.0.0.1:0` for any free port); `name` is its node id.
    pub async fn start(name: &str, addr: &str) -> Result<Hall, ReceiverError> {
        let state = Arc::new(Mutex::new(HallState {
            next_seq: 1,
            items: default_items(),
            ..HallState::default()
        }));
        let holder: Arc<Mutex<Option<Receiver>>> = Arc::new(Mutex::new(None));
        let routes = Router::new()
            .route("/api/cases", get(list_cases))
            .route("/api/holdings", get(holdings))
            .route("/api/holdings/count", get(holdings_count))
            .route("/api/items", get(items))
            .with_state((state.clone(), holder.clone()));
        let receiver = Receiver::start_with(name, addr, routes).await?;
        *holder.lock().unwrap_or_else(|p| p.into_inner()) = Some(receiver.clone());
        Ok(Hall { receiver, state })
    }

    fn lock(&self) -> MutexGuard<'_, HallState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.receiver.addr)
    }

    /// The national-platform dialect it speaks: cases are read with it (for holdings)
    /// and deliveries too.
    pub fn set_mappings(&self, set: crate::mapping::MappingSet) {
        self.receiver.set_mappings(set.clone());
        self.lock().mappings = Some(set);
    }

    /// Cases applied for at the hall now (its clock), in its native JSON.
    pub fn add_cases(&self, natives: Vec<Value>) {
        let mut g = self.lock();
        let at = now_ms() + g.skew_ms;
        for native in natives {
            let canonical = match &g.mappings {
                Some(set) => set
                    .decode(
                        native.to_string().as_bytes(),
                        Some("application/json"),
                        None,
                        &crate::mapping::Limits::default(),
                    )
                    .ok()
                    .and_then(|d| d.into_iter().next())
                    .and_then(|d| d.result.ok())
                    .map_or(Value::Null, |o| o.to_value()),
                None => native.clone(),
            };
            let seq = g.next_seq;
            g.next_seq += 1;
            g.generation += 1;
            g.own.push(Own {
                seq,
                at_ms: at,
                native,
                canonical,
            });
        }
    }

    /// Change a case the hall holds (a new version, its change time now).
    pub fn update_case(&self, case_no: &str, edit: impl Fn(&mut Value)) -> bool {
        let Some(i) = self
            .lock()
            .own
            .iter()
            .position(|o| o.canonical.get("case_no").and_then(Value::as_str) == Some(case_no))
        else {
            return false;
        };
        let mut native = self.lock().own.remove(i).native;
        edit(&mut native);
        self.add_cases(vec![native]);
        true
    }

    pub fn own_count(&self) -> usize {
        self.lock().own.len()
    }

    /// List holdings as the records themselves, in its own format (read through the
    /// node's mappings by the reconciliation), instead of summaries.
    pub fn set_native_holdings(&self, native: bool) {
        self.lock().native_holdings = native;
    }

    pub fn set_skew_ms(&self, skew: i64) {
        self.lock().skew_ms = skew;
    }

    /// Answer the next `n` pulls with 503.
    pub fn fail_pulls(&self, n: u32) {
        self.lock().fail_pulls = n;
    }

    /// Pull requests answered so far.
    pub fn pulls(&self) -> u64 {
        self.lock().pulls
    }

    pub fn set_items(&self, items: Vec<CatalogueItem>) {
        self.lock().items = items;
    }

    pub fn items(&self) -> Vec<CatalogueItem> {
        self.lock().items.clone()
    }

    /// Withdraw an item from the catalogue (事项取消).
    pub fn withdraw(&self, item_code: &str) -> bool {
        let mut g = self.lock();
        match g.items.iter_mut().find(|i| i.item_code == item_code) {
            Some(i) => {
                i.status = "withdrawn".into();
                true
            }
            None => false,
        }
    }
}

fn ms(text: &Option<String>) -> Option<i64> {
    text.as_deref().and_then(parse_time)
}

fn bad(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"code": "400", "msg": msg})),
    )
        .into_response()
}

type HallRouterState = (Arc<Mutex<HallState>>, Arc<Mutex<Option<Receiver>>>);

async fn list_cases(
    State((state, _)): State<HallRouterState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let mut g = state.lock().unwrap_or_else(|p| p.into_inner());
    g.pulls += 1;
    if g.fail_pulls > 0 {
        g.fail_pulls -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"code": "503", "msg": "系统繁忙"})),
        )
            .into_response();
    }
    let size = q.size.unwrap_or(100).clamp(1, 10_000);
    let (page, total): (Vec<&Own>, usize) = if q.from.is_some() || q.to.is_some() {
        let (Some(from), Some(to)) = (ms(&q.from), ms(&q.to)) else {
            return bad("from 和 to 须为 RFC 3339 时间");
        };
        let mut hits: Vec<&Own> = g
            .own
            .iter()
            .filter(|o| o.at_ms >= from && o.at_ms <= to)
            .collect();
        hits.sort_by_key(|o| (o.at_ms, o.seq));
        let skip = q.page.unwrap_or(1).saturating_sub(1).saturating_mul(size);
        let total = hits.len();
        (hits.into_iter().skip(skip).take(size).collect(), total)
    } else {
        let after = match (&q.after, &q.cursor) {
            (Some(a), _) => *a,
            (None, Some(c)) if c.is_empty() => 0,
            (None, Some(c)) => match c.parse() {
                Ok(a) => a,
                Err(_) => return bad("cursor 无效"),
            },
            (None, None) => 0,
        };
        let mut hits: Vec<&Own> = g.own.iter().filter(|o| o.seq > after).collect();
        hits.sort_by_key(|o| o.seq);
        let total = hits.len();
        (hits.into_iter().take(size).collect(), total)
    };
    let next = page.iter().map(|o| o.seq).max();
    let body: Vec<&Value> = page.iter().map(|o| &o.native).collect();
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    if let Some(n) = next
        && let Ok(v) = HeaderValue::from_str(&n.to_string())
    {
        h.insert("x-next-cursor", v);
    }
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        h.insert("x-total-count", v);
    }
    resp
}

/// What the hall holds, as reconciliation summaries with the time it stored each,
/// in time order (computed again only when something changed).
fn summaries(
    state: &Arc<Mutex<HallState>>,
    receiver: &Arc<Mutex<Option<Receiver>>>,
) -> Arc<Vec<(i64, Value)>> {
    let recv = receiver.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let key = {
        let g = state.lock().unwrap_or_else(|p| p.into_inner());
        (
            g.generation,
            recv.as_ref().map(Receiver::arrival_count).unwrap_or(0),
            recv.as_ref().map(Receiver::accepted_total).unwrap_or(0),
        )
    };
    if let Some((k, cached)) = &state.lock().unwrap_or_else(|p| p.into_inner()).holdings
        && *k == key
    {
        return cached.clone();
    }
    let fresh = Arc::new(compute_summaries(state, recv.as_ref()));
    state.lock().unwrap_or_else(|p| p.into_inner()).holdings = Some((key, fresh.clone()));
    fresh
}

fn compute_summaries(state: &Arc<Mutex<HallState>>, recv: Option<&Receiver>) -> Vec<(i64, Value)> {
    let mut out = Vec::new();
    let summary = |v: &Value, at: i64| -> Option<(i64, Value)> {
        let kind = Kind::parse(v.get("kind")?.as_str()?)?;
        let case_no = v.get("case_no")?.as_str()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some((
            at,
            json!({
                "kind": kind,
                "case_no": case_no,
                "record_id": s("record_id"),
                "material_id": s("material_id"),
                "step_no": v.get("step_no").and_then(Value::as_i64),
                "version": v.get("version").and_then(Value::as_i64),
                "op": s("op"),
                "at": rfc3339(at),
            }),
        ))
    };
    {
        let g = state.lock().unwrap_or_else(|p| p.into_inner());
        out.extend(g.own.iter().filter_map(|o| summary(&o.canonical, o.at_ms)));
    }
    if let Some(r) = recv {
        out.extend(
            r.accepted()
                .iter()
                .filter_map(|a| summary(&a.body, a.at_ms)),
        );
    }
    // One entry per record: the latest version it holds.
    let mut latest: std::collections::HashMap<(String, String), (i64, Value)> =
        std::collections::HashMap::new();
    for (at, v) in out {
        let kind = v["kind"].as_str().unwrap_or("").to_string();
        let id = identity_of(
            Kind::parse(&kind).unwrap_or(Kind::Application),
            v["case_no"].as_str().unwrap_or(""),
            v["record_id"].as_str(),
            v["material_id"].as_str(),
            v["step_no"].as_i64().unwrap_or(0),
        );
        match latest.get(&(kind.clone(), id.clone())) {
            Some((_, o)) if o["version"].as_i64() >= v["version"].as_i64() => {}
            _ => {
                latest.insert((kind, id), (at, v));
            }
        }
    }
    let mut out: Vec<(i64, Value)> = latest.into_values().collect();
    out.sort_by(|a, b| {
        (a.0, a.1["case_no"].as_str(), a.1["kind"].as_str()).cmp(&(
            b.0,
            b.1["case_no"].as_str(),
            b.1["kind"].as_str(),
        ))
    });
    out
}

async fn holdings(
    State((state, receiver)): State<HallRouterState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let (Some(from), Some(to)) = (ms(&q.from), ms(&q.to)) else {
        return bad("from 和 to 须为 RFC 3339 时间");
    };
    let size = q.size.unwrap_or(100).clamp(1, 10_000);
    let skip = q.page.unwrap_or(1).saturating_sub(1).saturating_mul(size);
    if state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .native_holdings
    {
        return axum::Json(native_holdings(&state, &receiver, from, to, skip, size))
            .into_response();
    }
    let all = summaries(&state, &receiver);
    let page: Vec<&Value> = all
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .skip(skip)
        .take(size)
        .map(|(_, v)| v)
        .collect();
    axum::Json(page).into_response()
}

/// Its holdings as records in its own format: its cases, and what it received.
fn native_holdings(
    state: &Arc<Mutex<HallState>>,
    receiver: &Arc<Mutex<Option<Receiver>>>,
    from: i64,
    to: i64,
    skip: usize,
    size: usize,
) -> Vec<Value> {
    let mut all: Vec<(i64, Value)> = {
        let g = state.lock().unwrap_or_else(|p| p.into_inner());
        g.own.iter().map(|o| (o.at_ms, o.native.clone())).collect()
    };
    let recv = receiver.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(r) = recv {
        all.extend(
            r.accepted()
                .iter()
                .filter_map(|a| Some((a.at_ms, serde_json::from_slice::<Value>(&a.raw).ok()?))),
        );
    }
    all.sort_by_key(|(at, _)| *at);
    all.into_iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .skip(skip)
        .take(size)
        .map(|(_, v)| v)
        .collect()
}

async fn holdings_count(
    State((state, receiver)): State<HallRouterState>,
    Query(q): Query<ListQuery>,
) -> Response {
    let (Some(from), Some(to)) = (ms(&q.from), ms(&q.to)) else {
        return bad("from 和 to 须为 RFC 3339 时间");
    };
    let n = summaries(&state, &receiver)
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .count();
    axum::Json(json!({ "count": n })).into_response()
}

async fn items(State((state, _)): State<HallRouterState>, _h: HeaderMap) -> Response {
    let g = state.lock().unwrap_or_else(|p| p.into_inner());
    axum::Json(g.items.clone()).into_response()
}

fn item(code: &str, name: &str, item_type: &str) -> CatalogueItem {
    CatalogueItem {
        item_code: code.into(),
        item_name: name.into(),
        item_type: Some(item_type.into()),
        version: Some("1".into()),
        region: Some("350000".into()),
        valid_from: Some("2024-01-01".into()),
        valid_to: None,
        status: "active".into(),
    }
}

/// The items the simulated hall starts with.
pub fn default_items() -> Vec<CatalogueItem> {
    ITEMS
        .iter()
        .map(|(code, name, t)| item(code, name, t))
        .collect()
}

/// Item codes of the simulated hall's catalogue, with names and types.
pub const ITEMS: &[(&str, &str, &str)] = &[
    (
        "91350200P3MPWH2J5G07QR0040500Y0001",
        "不动产登记",
        "confirmation",
    ),
    (
        "91350200P3MPWH2J5G01QR0010200Y0001",
        "建设工程规划许可证核发",
        "licensing",
    ),
    (
        "91350200P3MPWH2J5G20QR0090100Y0001",
        "不动产登记资料查询",
        "public_service",
    ),
];

/// GB 11643 check character of the first 17 characters of a resident ID number.
pub fn id_check_char(first17: &str) -> char {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(W)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'][(sum % 11) as usize]
}

/// A case applied for online at the hall, in the national platform's JSON:
/// `i` makes it unique, the item is one of [`ITEMS`].
pub fn sample_case(i: u64, item: usize) -> Value {
    let (code, name, _) = ITEMS[item % ITEMS.len()];
    let first17 = format!(
        "350205{:04}{:02}{:02}{:03}",
        1960 + (i % 40),
        1 + (i % 12),
        1 + (i % 28),
        i % 1000
    );
    let id_no = format!("{first17}{}", id_check_char(&first17));
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)));
    let stamp = now.strftime("%Y-%m-%d %H:%M:%S").to_string();
    json!({
        "ProjectNo": format!("SW3502{:012}", i),
        "ProjectPwd": format!("{:06}", (i * 7919) % 1_000_000),
        "TaskCode": code,
        "TaskName": name,
        "ItemType": if item % ITEMS.len() == 1 { "01" } else { "07" },
        "ProjectName": format!("{name}（网上申办 {i}）"),
        "InfoType": "2",
        "ApplyerType": "1",
        "ApplyerName": "林晓东",
        "ApplyerPageType": "111",
        "ApplyerPageCode": id_no,
        "ContactName": "林晓东",
        "ContactMobile": "18659201234",
        "ApplyChannel": "2",
        "ApplyDate": stamp,
        "OrgCode": "91350200P3MPWH2J5G",
        "OrgName": "厦门市自然资源和规划局海沧分局",
        "RegionCode": "350205",
        "PromiseTimeLimit": 5,
        "PromiseTimeUnit": "G",
        "DataVer": 1,
        "CdOperation": "I",
    })
}

/// The wall-clock time of the hall, for tests that skew it.
pub fn hall_now(skew_ms: i64) -> String {
    rfc3339(now_ms() + skew_ms)
}
