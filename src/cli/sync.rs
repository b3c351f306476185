//! `hallgate sync` (status, pause, resume, rewind, reconcile, backfill) and
//! `hallgate catalogue` (pull, show, diff).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use hallgate::config::Config;
use hallgate::mapping::Disk;

use super::time_arg;

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Every pull source (cursor, lag, last success and error, records pulled) and
    /// every 前置库 table source (rows pending, done and failed, lag, last error).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop pulling a source (a running gateway stops at its next page).
    Pause {
        /// The pulled node (its [nodes.ID] id, with a sync table).
        #[arg(long)]
        node: String,
    },
    /// Pull a paused source again, from its cursor (a running gateway resumes at its
    /// next poll).
    Resume {
        /// The pulled node (its [nodes.ID] id, with a sync table).
        #[arg(long)]
        node: String,
    },
    /// Move a source's cursor (records pulled again are deduplicated).
    Rewind {
        #[arg(long)]
        node: String,
        /// The new cursor: an RFC 3339 time, a sequence number or a token.
        #[arg(long)]
        to: String,
    },
    /// Compare what was exchanged with a node with what it holds (对账); exit 1 when
    /// they differ.
    Reconcile {
        #[arg(long)]
        node: String,
        /// Start of the range (RFC 3339 or a date).
        #[arg(long)]
        from: String,
        /// End of the range (default: now).
        #[arg(long)]
        to: Option<String>,
        /// Both sides are read this much wider than the range (clock skew, delivery lag).
        #[arg(long, default_value_t = 600)]
        slack_seconds: i64,
        /// Also write the differences as CSV to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Re-send what they are missing or hold in an older version.
        #[arg(long)]
        requeue: bool,
    },
    /// Re-send the deliveries to a node of the records received in a range
    /// (idempotently: same Idempotency-Keys), paced by the destination's rate.
    Backfill {
        #[arg(long)]
        node: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: Option<String>,
        /// Requeue at most this many per second (default: the destination's rate, else 100).
        #[arg(long)]
        rate: Option<usize>,
        /// Wait at most this long for them to be delivered (0: do not wait).
        #[arg(long, default_value_t = 600)]
        wait_seconds: u64,
    },
}

#[derive(Subcommand)]
pub enum CatalogueCommand {
    /// Pull the reference catalogue (`[catalogue] source`) into the store now.
    Pull,
    /// List the stored catalogue.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// How a city's or district's items differ from the province's on the elements
    /// that must match; exit 1 when they differ.
    Diff {
        /// The node whose catalogue (its sync.catalogue_url) is compared.
        #[arg(long)]
        node: String,
        /// Read the node's items from this JSON file instead of its API.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Also write the differences as CSV to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
}

fn sync_api(config: &Config, node: &str) -> anyhow::Result<hallgate::sync::Api> {
    let keys = Arc::new(hallgate::auth::outbound::GatewayKeys::load(config)?);
    Ok(hallgate::sync::Api::new(config, node, &keys)?)
}

pub async fn sync(cmd: SyncCommand, config: &Config) -> anyhow::Result<ExitCode> {
    use hallgate::sync;
    let store = hallgate::audit::tools::open_store(config).await?;
    let store = store.as_ref();
    match cmd {
        SyncCommand::Status { json } => {
            let mut status = sync::status(config, store).await?;
            // The 前置库 table sources, counted in their tables.
            let tables = hallgate::sources::tables::status::status(config, store).await;
            if json {
                status["tables"] = serde_json::Value::Array(tables);
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", sync::status_table(&status));
                print!(
                    "{}",
                    hallgate::sources::tables::status::status_text(&tables)
                );
            }
        }
        SyncCommand::Pause { node } => {
            let s = sync::control(config, store, &node, "pause", None).await?;
            println!("{node}: paused at {}", sync::describe(&s.cursor));
        }
        SyncCommand::Resume { node } => {
            let s = sync::control(config, store, &node, "resume", None).await?;
            println!("{node}: resumed at {}", sync::describe(&s.cursor));
        }
        SyncCommand::Rewind { node, to } => {
            let s = sync::control(config, store, &node, "rewind", Some(&to)).await?;
            println!("{node}: cursor set to {}", sync::describe(&s.cursor));
        }
        SyncCommand::Reconcile {
            node,
            from,
            to,
            slack_seconds,
            csv,
            requeue,
        } => {
            let from = time_arg(Some(&from), "from")?.unwrap_or_default();
            let to = time_arg(to.as_deref(), "to")?.unwrap_or_else(hallgate::time::now_ms);
            let api = sync_api(config, &node)?;
            let started = std::time::Instant::now();
            // Their list may come in their own format, read with their mappings.
            let mappings = hallgate::mapping::load_sets(config, &Disk)?.remove(&node);
            let mut report = sync::reconcile::reconcile(
                config,
                store,
                &api,
                mappings.as_ref(),
                from,
                to,
                slack_seconds * 1000,
            )
            .await?;
            sync::reconcile::record(store, &mut report, requeue, &sync::operator()).await?;
            print!("{}", report.table());
            println!("  took {:.1} s", started.elapsed().as_secs_f64());
            if let Some(path) = csv {
                std::fs::write(&path, report.csv()?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("  differences written to {}", path.display());
            }
            if !report.is_clean() {
                return Ok(ExitCode::from(1));
            }
        }
        SyncCommand::Backfill {
            node,
            from,
            to,
            rate,
            wait_seconds,
        } => {
            let from = time_arg(Some(&from), "from")?.unwrap_or_default();
            let to = time_arg(to.as_deref(), "to")?.unwrap_or_else(hallgate::time::now_ms);
            let rate = rate.unwrap_or_else(|| {
                config
                    .nodes
                    .get(&node)
                    .and_then(|n| n.get_ref().destination.as_ref())
                    .and_then(|d| d.rate.as_ref())
                    .map(|r| r.per_second as usize)
                    .unwrap_or(100)
            });
            let b = sync::backfill(
                config,
                store,
                &sync::BackfillRequest {
                    node: &node,
                    from_ms: from,
                    to_ms: to,
                    per_second: rate,
                    wait: std::time::Duration::from_secs(wait_seconds),
                    operator: &sync::operator(),
                },
            )
            .await?;
            println!(
                "backfill to {node}: {} deliveries selected, {} requeued, {} delivered ({:.1} s waited)",
                b.selected, b.requeued, b.delivered, b.waited_seconds
            );
            if wait_seconds > 0 && b.delivered < b.requeued {
                println!(
                    "  not all delivered yet: check that the gateway is running and that {node} answers (GET /v1/deliveries?destination={node}&state=pending)"
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn catalogue(cmd: CatalogueCommand, config: &Config) -> anyhow::Result<ExitCode> {
    use hallgate::sync;
    let store = hallgate::audit::tools::open_store(config).await?;
    let store = store.as_ref();
    match cmd {
        CatalogueCommand::Pull => {
            let source = config
                .catalogue
                .as_ref()
                .context("no [catalogue] source in the config")?;
            let api = sync_api(config, &source.source)?;
            let change =
                sync::refresh_catalogue(config, &api, store, &sync::Catalogue::default()).await?;
            println!(
                "catalogue from {}: {} items; {} added, {} changed, {} withdrawn",
                source.source,
                change.total,
                change.added.len(),
                change.changed.len(),
                change.withdrawn.len()
            );
        }
        CatalogueCommand::Show { json } => {
            let items = store.catalogue().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
            } else {
                for i in &items {
                    println!(
                        "{:<40} {:<10} {} v{:<4} {}",
                        i.item_code,
                        i.status,
                        sync::pad(i.item_type.as_deref().unwrap_or("-"), 15),
                        i.version.as_deref().unwrap_or("-"),
                        i.item_name
                    );
                }
                println!("{} items", items.len());
            }
        }
        CatalogueCommand::Diff { node, file, csv } => {
            let Some(n) = config.nodes.get(&node) else {
                anyhow::bail!("node `{node}` is not in the config");
            };
            let local: Vec<hallgate::store::CatalogueItem> = match file {
                Some(path) => {
                    let items: Vec<hallgate::store::CatalogueItem> = serde_json::from_slice(
                        &std::fs::read(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    )
                    .with_context(|| {
                        format!("{}: a JSON array of catalogue items", path.display())
                    })?;
                    sync::check_items(&items)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    items
                }
                None => {
                    let url = n
                        .get_ref()
                        .sync
                        .as_ref()
                        .and_then(|s| s.catalogue_url.clone())
                        .with_context(|| {
                            format!("node `{node}` has no sync.catalogue_url; give its items with --file ITEMS.json")
                        })?;
                    let api = sync_api(config, &node)?;
                    sync::fetch_catalogue(&api, &url, 64 << 20).await?
                }
            };
            let province = store.catalogue().await?;
            anyhow::ensure!(
                !province.is_empty(),
                "the store holds no catalogue yet: run `hallgate catalogue pull`"
            );
            let region = config
                .nodes
                .get(&node)
                .and_then(|n| n.get_ref().region.clone());
            let diffs = sync::catalogue_diff(&local, &province, region.as_deref());
            for d in &diffs {
                println!(
                    "{:<40} {:<22} local: {} province: {}",
                    d.item_code,
                    d.problem,
                    sync::pad(d.local.as_deref().unwrap_or("-"), 20),
                    d.province.as_deref().unwrap_or("-")
                );
            }
            println!(
                "{node}: {} items, province: {} items, {} differences",
                local.len(),
                province.len(),
                diffs.len()
            );
            if let Some(path) = csv {
                let mut w = csv::Writer::from_path(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
                w.write_record(["item_code", "problem", "local", "province"])?;
                for d in &diffs {
                    w.write_record([
                        d.item_code.as_str(),
                        d.problem,
                        d.local.as_deref().unwrap_or(""),
                        d.province.as_deref().unwrap_or(""),
                    ])?;
                }
                w.flush()?;
            }
            if !diffs.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
