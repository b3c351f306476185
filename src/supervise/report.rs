//! Reports over supervised cases (效能评估): per department, item or region, cases
//! received, finished and finished on time, working days used against promised
//! (mean and 90th percentile), overdue cases still open, and data-quality failures
//! by code. Pages through the store by case number, so memory is bounded by the
//! number of groups, not of cases.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::Store;
use crate::store::supervision::{SvCase, SvFilter, SvOp, SvOut};

use super::SuperviseError;

/// Cases read per page.
pub const PAGE: usize = 5_000;
/// The most groups a report holds (departments, items or regions).
pub const MAX_GROUPS: usize = 100_000;
/// The quality codes, in order.
pub const CODES: [&str; 6] = ["0001", "0002", "0003", "0004", "0005", "0006"];

/// What a report is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Dept,
    Item,
    Region,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        Some(match s {
            "dept" => By::Dept,
            "item" => By::Item,
            "region" => By::Region,
            _ => return None,
        })
    }

    fn key(self, c: &SvCase) -> (String, String) {
        let (code, name) = match self {
            By::Dept => (&c.dept_code, &c.dept_name),
            By::Item => (&c.item_code, &c.item_name),
            By::Region => (&c.region, &None),
        };
        (
            code.clone().unwrap_or_else(|| "-".into()),
            name.clone().unwrap_or_default(),
        )
    }
}

/// One group's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Row {
    pub code: String,
    pub name: String,
    pub received: u64,
    pub finished: u64,
    pub finished_on_time: u64,
    /// finished_on_time / finished (0 when none finished).
    pub on_time_rate: f64,
    pub used_days_mean: f64,
    pub used_days_p90: f64,
    pub promised_days_mean: f64,
    pub promised_days_p90: f64,
    pub overdue_open: u64,
    /// Data-quality failures by code (`0001` … `0006`).
    pub quality: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Acc {
    row: Row,
    used: Vec<f64>,
    promised: Vec<f64>,
}

/// The report over cases accepted in `[from_ms, to_ms)`. `progress` is called with
/// the number of cases read so far.
pub async fn report(
    store: &dyn Store,
    by: By,
    from_ms: i64,
    to_ms: i64,
    mut progress: impl FnMut(u64),
) -> Result<Vec<Row>, SuperviseError> {
    let mut groups: BTreeMap<(String, String), Acc> = BTreeMap::new();
    let mut after = None;
    let mut read = 0u64;
    loop {
        let filter = SvFilter {
            accepted_from_ms: Some(from_ms),
            accepted_to_ms: Some(to_ms),
            after: after.clone(),
            limit: PAGE,
            ..SvFilter::default()
        };
        let SvOut::Cases(page) = store.supervision(SvOp::Cases(filter)).await? else {
            return Err(SuperviseError::Answer);
        };
        let n = page.len();
        for c in &page {
            let key = by.key(c);
            if !groups.contains_key(&key) && groups.len() >= MAX_GROUPS {
                return Err(SuperviseError::TooManyGroups(MAX_GROUPS));
            }
            add(groups.entry(key).or_default(), c);
        }
        read += n as u64;
        progress(read);
        after = page.last().map(|c| c.case_no.clone());
        if n < PAGE {
            break;
        }
    }
    Ok(groups
        .into_iter()
        .map(|((code, name), mut acc)| {
            acc.row.code = code;
            acc.row.name = name;
            finish(acc)
        })
        .collect())
}

fn add(acc: &mut Acc, c: &SvCase) {
    let r = &mut acc.row;
    r.received += 1;
    match c.state.as_deref() {
        Some("finished_on_time") => {
            r.finished += 1;
            r.finished_on_time += 1;
        }
        Some("finished_late") => r.finished += 1,
        Some("overdue") => r.overdue_open += 1,
        _ => {}
    }
    if let Some(u) = c.used_days {
        acc.used.push(u);
    }
    if let Some(p) = c.promised_days {
        acc.promised.push(p);
    }
    for code in c.quality.split(',').filter(|s| !s.is_empty()) {
        *r.quality.entry(code.to_string()).or_default() += 1;
    }
}

/// The mean and the 90th percentile (nearest rank) of a list, rounded to 0.01.
pub fn mean_p90(values: &mut [f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let rank = (0.9 * values.len() as f64).ceil() as usize;
    let p90 = values[rank.clamp(1, values.len()) - 1];
    (round(mean), round(p90))
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn finish(mut acc: Acc) -> Row {
    let (um, up) = mean_p90(&mut acc.used);
    let (pm, pp) = mean_p90(&mut acc.promised);
    let r = &mut acc.row;
    r.used_days_mean = um;
    r.used_days_p90 = up;
    r.promised_days_mean = pm;
    r.promised_days_p90 = pp;
    r.on_time_rate = if r.finished == 0 {
        0.0
    } else {
        round(r.finished_on_time as f64 / r.finished as f64)
    };
    acc.row
}

/// The report as CSV (UTF-8 with a BOM, so spreadsheet programs read the Chinese).
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "\u{feff}code,name,received,finished,finished_on_time,on_time_rate,used_days_mean,used_days_p90,promised_days_mean,promised_days_p90,overdue_open",
    );
    for c in CODES {
        out.push_str(&format!(",quality_{c}"));
    }
    out.push('\n');
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{}",
            field(&r.code),
            field(&r.name),
            r.received,
            r.finished,
            r.finished_on_time,
            r.on_time_rate,
            r.used_days_mean,
            r.used_days_p90,
            r.promised_days_mean,
            r.promised_days_p90,
            r.overdue_open
        ));
        for c in CODES {
            out.push_str(&format!(",{}", r.quality.get(c).copied().unwrap_or(0)));
        }
        out.push('\n');
    }
    out
}
