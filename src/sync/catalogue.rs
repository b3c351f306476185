//! The item catalogue (事项目录): the in-memory copy intake checks records against
//! ([`Catalogue`]), its refresh from the reference node, and the comparison of a
//! city's or district's items with the province's.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Api, SyncError, settings};
use crate::config::{CataloguePolicy, Config};
use crate::record::{FieldError, Record};
use crate::store::{CatalogueItem, Store, StoreError};
use crate::time::{now_ms, today};

/// The item catalogue as last pulled, for the ingress's per-record check. The store
/// holds the catalogue; this is its in-memory copy, replaced whole on each refresh.
#[derive(Clone, Default)]
pub struct Catalogue {
    items: Arc<RwLock<Arc<HashMap<String, CatalogueItem>>>>,
}

/// What is wrong with a record's item code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemProblem {
    Unknown(String),
    Withdrawn(String),
    NotValid {
        code: String,
        from: Option<String>,
        to: Option<String>,
    },
}

impl ItemProblem {
    /// The stable code: a flag on the record, or the rule of a refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ItemProblem::Unknown(_) => "item_unknown",
            ItemProblem::Withdrawn(_) => "item_withdrawn",
            ItemProblem::NotValid { .. } => "item_not_valid",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ItemProblem::Unknown(c) => format!("item code {c} is not in the item catalogue"),
            ItemProblem::Withdrawn(c) => {
                format!("item code {c} was withdrawn from the item catalogue")
            }
            ItemProblem::NotValid { code, from, to } => format!(
                "item code {code} is valid only from {} to {}",
                from.as_deref().unwrap_or("the beginning"),
                to.as_deref().unwrap_or("no end")
            ),
        }
    }

    pub fn field_error(&self, record: usize) -> FieldError {
        FieldError {
            record,
            field: "item_code".into(),
            source_path: None,
            rule: self.code().into(),
            message: self.message(),
        }
    }
}

impl Catalogue {
    pub fn replace(&self, items: Vec<CatalogueItem>) {
        let map: HashMap<String, CatalogueItem> = items
            .into_iter()
            .map(|i| (i.item_code.clone(), i))
            .collect();
        if let Ok(mut guard) = self.items.write() {
            *guard = Arc::new(map);
        }
    }

    pub fn len(&self) -> usize {
        self.items.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Load the stored catalogue.
    pub async fn load(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.replace(store.catalogue().await?);
        Ok(())
    }

    /// The problem with `r`'s item code under `policy`, if any. A record without an
    /// item code, a policy of `off` or a catalogue never pulled check nothing.
    pub fn check(&self, policy: CataloguePolicy, r: &Record) -> Option<ItemProblem> {
        if policy == CataloguePolicy::Off {
            return None;
        }
        let code = r.str_field("item_code")?;
        let items = self.items.read().ok()?.clone();
        if items.is_empty() {
            return None;
        }
        let Some(item) = items.get(code) else {
            return Some(ItemProblem::Unknown(code.to_string()));
        };
        if item.status == "withdrawn" {
            return Some(ItemProblem::Withdrawn(code.to_string()));
        }
        let today = today();
        let before = item
            .valid_from
            .as_deref()
            .is_some_and(|f| today.as_str() < f);
        let after = item.valid_to.as_deref().is_some_and(|t| today.as_str() > t);
        (before || after).then(|| ItemProblem::NotValid {
            code: code.to_string(),
            from: item.valid_from.clone(),
            to: item.valid_to.clone(),
        })
    }
}

/// Pull the catalogue from the node `[catalogue] source` names into the store and the
/// cache. Returns what changed.
pub async fn refresh_catalogue(
    config: &Config,
    api: &Api,
    store: &dyn Store,
    cache: &Catalogue,
) -> Result<crate::store::CatalogueChange, SyncError> {
    let s = settings(config, &api.node)?;
    let url = s
        .catalogue_url
        .as_deref()
        .ok_or_else(|| SyncError::NotConfigured {
            node: api.node.clone(),
            key: "catalogue_url",
        })?;
    let items = fetch_catalogue(api, url, config.limits.max_body_bytes.max(64 << 20)).await?;
    let change = store.catalogue_replace(&api.node, items, now_ms()).await?;
    cache.load(store).await?;
    Ok(change)
}

/// Read a catalogue API: a JSON array of items (docs/sync.md).
pub async fn fetch_catalogue(
    api: &Api,
    url: &str,
    max_bytes: usize,
) -> Result<Vec<CatalogueItem>, SyncError> {
    let (items, _): (Vec<CatalogueItem>, _) = api.get_json(url, &[], max_bytes).await?;
    check_items(&items).map_err(|reason| SyncError::BadAnswer {
        url: url.to_string(),
        reason,
    })?;
    Ok(items)
}

/// What is wrong with a list of catalogue items, if anything: an empty or repeated
/// item code, a status other than active or withdrawn.
pub fn check_items(items: &[CatalogueItem]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if item.item_code.trim().is_empty() {
            return Err(format!("item {i} has an empty item_code"));
        }
        if !seen.insert(item.item_code.as_str()) {
            return Err(format!("item code {} is listed twice", item.item_code));
        }
        if item.status != "active" && item.status != "withdrawn" {
            return Err(format!(
                "item {}: status `{}` is not active or withdrawn",
                item.item_code, item.status
            ));
        }
    }
    Ok(())
}

/// Keep the catalogue of `[catalogue] source` fresh: pull it every
/// `catalogue_interval_seconds` (backing off on errors) until `shutdown`.
pub fn spawn_refresh(
    config: Arc<Config>,
    store: Arc<dyn Store>,
    cache: Catalogue,
    api: Api,
    set: &mut tokio::task::JoinSet<()>,
    shutdown: CancellationToken,
) -> Result<(), SyncError> {
    let every = Duration::from_secs(settings(&config, &api.node)?.catalogue_interval_seconds);
    set.spawn(async move {
        let mut failures = 0u32;
        loop {
            let wait = match refresh_catalogue(&config, &api, &*store, &cache).await {
                Ok(change) => {
                    failures = 0;
                    if !change.added.is_empty()
                        || !change.changed.is_empty()
                        || !change.withdrawn.is_empty()
                    {
                        tracing::info!(source = %api.node, added = change.added.len(), changed = change.changed.len(), withdrawn = change.withdrawn.len(), items = change.total, "item catalogue updated");
                    }
                    metrics::gauge!("hallgate_catalogue_items").set(cache.len() as f64);
                    every
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(source = %api.node, error = %e, "item catalogue pull failed");
                    metrics::counter!("hallgate_catalogue_errors_total").increment(1);
                    super::backoff(failures, &e).min(every)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
    Ok(())
}

/// How a city's or district's catalogue item differs from the province's.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ItemDiff {
    pub item_code: String,
    /// `missing_at_province`, `withdrawn_at_province`, `not_valid_at_province`,
    /// `name_differs`, `type_differs`, `version_differs`, `missing_locally`.
    pub problem: &'static str,
    pub local: Option<String>,
    pub province: Option<String>,
}

/// `text` padded with spaces to `width` terminal columns, counting Chinese (and other
/// East Asian wide) characters as two, so that columns of item names line up.
pub fn pad(text: &str, width: usize) -> String {
    let wide = |c: char| {
        matches!(c as u32,
            0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD)
    };
    let used: usize = text.chars().map(|c| if wide(c) { 2 } else { 1 }).sum();
    let mut out = String::with_capacity(text.len() + width.saturating_sub(used));
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
    out
}

/// Compare a node's items with the province's on the elements that must be the same
/// at every level (四级十同: code, name, type; and the version in force). Province
/// items of the node's region (by prefix) that the node lacks are listed too.
pub fn catalogue_diff(
    local: &[CatalogueItem],
    province: &[CatalogueItem],
    region: Option<&str>,
) -> Vec<ItemDiff> {
    let prov: HashMap<&str, &CatalogueItem> =
        province.iter().map(|i| (i.item_code.as_str(), i)).collect();
    let today = today();
    let mut out = Vec::new();
    let diff = |code: &str, problem, local: Option<&str>, province: Option<&str>| ItemDiff {
        item_code: code.to_string(),
        problem,
        local: local.map(str::to_string),
        province: province.map(str::to_string),
    };
    for l in local.iter().filter(|l| l.status != "withdrawn") {
        let code = l.item_code.as_str();
        let Some(p) = prov.get(code) else {
            out.push(diff(code, "missing_at_province", Some(&l.item_name), None));
            continue;
        };
        if p.status == "withdrawn" {
            out.push(diff(
                code,
                "withdrawn_at_province",
                Some("active"),
                Some("withdrawn"),
            ));
            continue;
        }
        let before = p.valid_from.as_deref().is_some_and(|f| today.as_str() < f);
        let after = p.valid_to.as_deref().is_some_and(|t| today.as_str() > t);
        if before || after {
            let span = format!(
                "{} .. {}",
                p.valid_from.as_deref().unwrap_or(""),
                p.valid_to.as_deref().unwrap_or("")
            );
            out.push(diff(code, "not_valid_at_province", None, Some(&span)));
        }
        if l.item_name.trim() != p.item_name.trim() {
            out.push(diff(
                code,
                "name_differs",
                Some(&l.item_name),
                Some(&p.item_name),
            ));
        }
        if l.item_type.is_some() && p.item_type.is_some() && l.item_type != p.item_type {
            out.push(diff(
                code,
                "type_differs",
                l.item_type.as_deref(),
                p.item_type.as_deref(),
            ));
        }
        if l.version.is_some() && p.version.is_some() && l.version != p.version {
            out.push(diff(
                code,
                "version_differs",
                l.version.as_deref(),
                p.version.as_deref(),
            ));
        }
    }
    let local_codes: std::collections::HashSet<&str> =
        local.iter().map(|l| l.item_code.as_str()).collect();
    if let Some(region) = region {
        let prefix = region.trim_end_matches('0');
        for p in province.iter().filter(|p| p.status == "active") {
            let applies = p
                .region
                .as_deref()
                .is_some_and(|r| prefix.starts_with(r.trim_end_matches('0')));
            if applies && !local_codes.contains(p.item_code.as_str()) {
                out.push(diff(
                    &p.item_code,
                    "missing_locally",
                    None,
                    Some(&p.item_name),
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.item_code, a.problem).cmp(&(&b.item_code, b.problem)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn padding_counts_chinese_characters_as_two_columns() {
        assert_eq!(pad("ab", 5), "ab   ");
        assert_eq!(pad("食品经营许可", 14), "食品经营许可  ");
        assert_eq!(pad("（新）ＡＢ", 12), "（新）ＡＢ  ");
        assert_eq!(pad("too long", 3), "too long");
    }

    #[test]
    fn catalogue_check_follows_the_policy() {
        let cat = Catalogue::default();
        let rec = |code: &str| {
            Record::from_value(
                0,
                json!({"kind": "application", "case_no": "C1", "item_code": code, "region": "330100"}),
                None,
            )
            .expect("record")
        };
        // Never pulled: nothing is checked.
        assert_eq!(cat.check(CataloguePolicy::Refuse, &rec("X")), None);
        cat.replace(vec![
            CatalogueItem {
                item_code: "A".into(),
                item_name: "甲".into(),
                item_type: None,
                version: None,
                region: None,
                valid_from: None,
                valid_to: None,
                status: "active".into(),
            },
            CatalogueItem {
                item_code: "W".into(),
                item_name: "乙".into(),
                item_type: None,
                version: None,
                region: None,
                valid_from: None,
                valid_to: None,
                status: "withdrawn".into(),
            },
            CatalogueItem {
                item_code: "OLD".into(),
                item_name: "丙".into(),
                item_type: None,
                version: None,
                region: None,
                valid_from: Some("2001-01-01".into()),
                valid_to: Some("2002-01-01".into()),
                status: "active".into(),
            },
        ]);
        assert_eq!(cat.check(CataloguePolicy::Refuse, &rec("A")), None);
        assert_eq!(cat.check(CataloguePolicy::Off, &rec("X")), None);
        assert_eq!(
            cat.check(CataloguePolicy::Flag, &rec("X"))
                .map(|p| p.code()),
            Some("item_unknown")
        );
        assert_eq!(
            cat.check(CataloguePolicy::Refuse, &rec("W"))
                .map(|p| p.code()),
            Some("item_withdrawn")
        );
        assert_eq!(
            cat.check(CataloguePolicy::Refuse, &rec("OLD"))
                .map(|p| p.code()),
            Some("item_not_valid")
        );
    }
}
