//! Reloading the configuration while serving (SIGHUP, `POST /v1/admin/reload`,
//! `[gateway] watch_config`). The new configuration is checked whole, as
//! `hallgate check` does (values, references, the files it names, every mapping and
//! its examples); settings that cannot change while running are refused. Only then
//! is a new generation built and swapped in. A failure leaves the old one serving.
//! Every reload, done or refused, is audited (`config_reloaded`) with who asked and
//! the SHA-256 of each file it read; a removed destination's deliveries are kept in
//! the store and reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::generation::{self, Live, Shared};
use crate::api::admin::ReloadAsk;
use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::mapping::{Disk, Files};
use crate::time::now_ms;

/// How often `[gateway] watch_config` looks at the files.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Reads through the file system, noting each file read and the SHA-256 of its bytes.
#[derive(Default)]
pub(super) struct Noted {
    read: Mutex<BTreeMap<PathBuf, String>>,
}

impl Files for Noted {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let bytes = Disk.read(path)?;
        if let Ok(mut read) = self.read.lock() {
            read.insert(path.to_path_buf(), sha256_hex(&bytes));
        }
        Ok(bytes)
    }
    fn exists(&self, path: &Path) -> bool {
        Disk.exists(path)
    }
}

/// The files a generation was loaded from, with their hashes.
pub(super) type Loaded = BTreeMap<PathBuf, String>;

/// The config file's hash, and the mapping files' noted while loading.
pub(super) fn loaded(config_path: &Path, noted: Noted) -> Loaded {
    let mut files = noted.read.into_inner().unwrap_or_default();
    if let Ok(bytes) = std::fs::read(config_path) {
        files.insert(config_path.to_path_buf(), sha256_hex(&bytes));
    }
    files
}

/// The hashes of the same files as they are on disk now (a missing file hashes to "").
fn on_disk(files: &Loaded) -> Loaded {
    files
        .keys()
        .map(|p| {
            let h = std::fs::read(p).map(|b| sha256_hex(&b)).unwrap_or_default();
            (p.clone(), h)
        })
        .collect()
}

/// Settings read once at start; a new value is refused until a restart.
fn fixed_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut fixed = |key: &str, a: String, b: String| {
        if a != b {
            out.push(format!(
                "{key} cannot change while the gateway runs (it is {a}, the file says {b}): restart to apply it"
            ));
        }
    };
    fixed("gateway.id", old.gateway.id.clone(), new.gateway.id.clone());
    fixed(
        "gateway.listen",
        old.gateway.listen.get_ref().clone(),
        new.gateway.listen.get_ref().clone(),
    );
    fixed(
        "gateway.store",
        old.gateway.store.get_ref().clone(),
        new.gateway.store.get_ref().clone(),
    );
    fixed(
        "gateway.tls",
        format!("{:?}", old.gateway.tls),
        format!("{:?}", new.gateway.tls),
    );
    fixed(
        "gateway.trust_node_header",
        old.gateway.trust_node_header.to_string(),
        new.gateway.trust_node_header.to_string(),
    );
    fixed("audit.hash", old.audit.hash.clone(), new.audit.hash.clone());
    fixed(
        "[store] encryption",
        format!("{:?}", old.store),
        format!("{:?}", new.store),
    );
    fixed("log.format", old.log.format.clone(), new.log.format.clone());
    out
}

/// Load and check the configuration at `path` whole, as `hallgate check` does.
fn checked(
    path: &Path,
) -> Result<(Config, BTreeMap<String, crate::mapping::MappingSet>, Loaded), String> {
    let config = super::load(path).map_err(|e| e.to_string())?;
    let noted = Noted::default();
    let sets = crate::mapping::load_sets(&config, &noted).map_err(|e| e.to_string())?;
    let refs: Vec<(String, &crate::mapping::MappingSet)> =
        sets.iter().map(|(n, s)| (n.clone(), s)).collect();
    let mut out = Vec::new();
    let ok = crate::mapping::tool::run_examples(
        &refs,
        &crate::mapping::Limits::of(&config.limits),
        &noted,
        &mut out,
    );
    if !ok {
        return Err(format!(
            "{}: mapping examples failed:\n{}",
            path.display(),
            String::from_utf8_lossy(&out).trim_end()
        ));
    }
    let files = loaded(path, noted);
    Ok((config, sets, files))
}

/// Ids added, removed and changed between two maps.
fn changes<'a, T: std::fmt::Debug + 'a>(
    old: impl Iterator<Item = (&'a str, &'a T)>,
    new: impl Iterator<Item = (&'a str, &'a T)>,
) -> Value {
    let old: BTreeMap<&str, String> = old.map(|(k, v)| (k, format!("{v:?}"))).collect();
    let new: BTreeMap<&str, String> = new.map(|(k, v)| (k, format!("{v:?}"))).collect();
    let added: Vec<&str> = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .copied()
        .collect();
    let removed: Vec<&str> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .copied()
        .collect();
    let changed: Vec<&str> = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| *k)
        .collect();
    json!({ "added": added, "removed": removed, "changed": changed })
}

/// The reloader: the one task that swaps generations, one reload at a time.
pub(super) struct Reloader {
    pub shared: Shared,
    pub live: Live,
    pub files: Loaded,
    pub config_path: PathBuf,
}

impl Reloader {
    /// Serve reload asks until shutdown; then retire every generation and wait for
    /// their tasks.
    pub(super) async fn run(mut self, mut asks: mpsc::Receiver<ReloadAsk>) {
        let mut retiring = JoinSet::new();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The files as last looked at by the watch (a broken edit is tried once).
        let mut seen = self.files.clone();
        let root = self.shared.root.clone();
        loop {
            tokio::select! {
                _ = root.cancelled() => break,
                Some(ask) = asks.recv() => {
                    let outcome = self.reload(&ask.by, &mut retiring).await;
                    seen = on_disk(&self.files);
                    let _ = ask.reply.send(outcome);
                }
                Some(_) = retiring.join_next(), if !retiring.is_empty() => {}
                _ = tick.tick(), if self.live.config.gateway.watch_config => {
                    let now = on_disk(&self.files);
                    if now != seen {
                        let _ = self.reload("watch_config (a file changed)", &mut retiring).await;
                        seen = on_disk(&self.files);
                    }
                }
            }
        }
        self.live.retire().await;
        while retiring.join_next().await.is_some() {}
    }

    /// Reload once: the report, or why the old configuration stays.
    async fn reload(&mut self, by: &str, retiring: &mut JoinSet<()>) -> Result<Value, String> {
        let outcome = self.try_reload(by, retiring).await;
        let mut ev = Event::new(now_ms(), EventKind::ConfigReloaded);
        ev.detail = match &outcome {
            Ok(report) => report.clone(),
            Err(problem) => json!({
                "reloaded": false,
                "by": by,
                "path": self.config_path.display().to_string(),
                "error": problem,
            }),
        };
        if let Err(e) = self.shared.store.audit(ev).await {
            tracing::error!(error = %e, "could not audit a reload");
        }
        match &outcome {
            Ok(report) => {
                metrics::counter!("hallgate_config_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!(by, nodes = %report["nodes"], destinations = %report["destinations"], kept_backlog = %report["kept_backlog"], "configuration reloaded");
            }
            Err(problem) => {
                metrics::counter!("hallgate_config_reloads_total", "outcome" => "refused")
                    .increment(1);
                tracing::error!(by, error = %problem, "configuration not reloaded; the previous one keeps serving");
            }
        }
        outcome
    }

    async fn try_reload(&mut self, by: &str, retiring: &mut JoinSet<()>) -> Result<Value, String> {
        let path = self.config_path.clone();
        let (config, sets, files) = tokio::task::spawn_blocking(move || checked(&path))
            .await
            .map_err(|e| format!("the check did not finish: {e}"))??;
        let fixed = fixed_changes(&self.live.config, &config);
        if !fixed.is_empty() {
            return Err(format!(
                "{}: {}",
                self.config_path.display(),
                fixed.join("; ")
            ));
        }
        let old = self.live.config.clone();
        let nodes = changes(
            old.nodes.iter().map(|(k, v)| (k.as_str(), v.get_ref())),
            config.nodes.iter().map(|(k, v)| (k.as_str(), v.get_ref())),
        );
        let destinations = changes(old.destinations(), config.destinations());
        let built = generation::build(config, sets, &self.shared).map_err(|e| e.to_string())?;
        let new = built.serve(&self.shared).await.map_err(|e| e.to_string())?;
        let previous = std::mem::replace(&mut self.live, new);
        retiring.spawn(previous.retire());
        self.files = files;
        // What waits for a destination no longer configured stays, and is reported.
        let removed: Vec<String> = destinations["removed"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        let mut kept = Vec::new();
        if !removed.is_empty() {
            let depths = self.shared.store.queue_depths().await.unwrap_or_default();
            for d in &removed {
                let q = depths.iter().find(|q| &q.destination == d);
                let (pending, dead) = q.map_or((0, 0), |q| (q.pending, q.dead));
                if pending + dead > 0 {
                    tracing::warn!(destination = %d, pending, dead, "a removed destination's deliveries are kept in the store; they are delivered if it is added back");
                }
                kept.push(json!({ "destination": d, "pending": pending, "dead": dead }));
            }
        }
        Ok(json!({
            "reloaded": true,
            "by": by,
            "at": crate::time::rfc3339(now_ms()),
            "files": self.files.iter().map(|(p, h)| json!({ "path": p.display().to_string(), "sha256": h })).collect::<Vec<_>>(),
            "nodes": nodes,
            "destinations": destinations,
            "routes": self.live.config.routes.len(),
            "kept_backlog": kept,
        }))
    }
}
