//! `hallgate deliveries` (list, show, retry, pause, resume): the delivery queue and
//! its dead letters from the command line, on the config's store beside a running
//! gateway. Every action is audited with the operating-system user who ran it; the
//! gateway's workers pick it up at their next poll (a pause within a second).

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Subcommand;
use hallgate::config::Config;
use hallgate::delivery::manual;
use hallgate::store::{Asked, DeliveryFilter, DeliveryState, DeliveryView, OpenMode};

use super::time_arg;

#[derive(Subcommand)]
pub enum DeliveriesCommand {
    /// Deliveries, oldest first, as a table or JSON.
    List {
        #[arg(long)]
        destination: Option<String>,
        /// pending, leased (pending and held by a worker now), delivered or dead.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        case_no: Option<String>,
        /// Created at or after this date or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One delivery with its attempts: status, time, receipt and reason.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in the queue: one (--id), or every one to a destination
    /// (--destination D --state dead [--since T]). Says how many and asks first,
    /// unless --yes.
    Retry {
        #[arg(long, conflicts_with_all = ["destination", "since"])]
        id: Option<i64>,
        #[arg(long, requires = "state")]
        destination: Option<String>,
        /// Only `dead`: what a retry puts back.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        since: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Stop delivering to a destination (on every instance, across restarts):
    /// deliveries in flight finish, the rest wait until it is resumed.
    Pause {
        #[arg(long)]
        destination: String,
    },
    /// Deliver to a paused destination again.
    Resume {
        #[arg(long)]
        destination: String,
    },
}

/// Who runs the command, as its audit event says.
fn cli_user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!("cli {user}@{}", host.trim())
}

fn state_arg(s: Option<&str>) -> anyhow::Result<(Option<DeliveryState>, Option<bool>)> {
    Ok(match s {
        None => (None, None),
        Some("leased") => (Some(DeliveryState::Pending), Some(true)),
        Some(s) => (
            Some(DeliveryState::parse(s).ok_or_else(|| {
                anyhow::anyhow!("--state `{s}`: pending, leased, delivered or dead")
            })?),
            None,
        ),
    })
}

fn table(list: &[DeliveryView]) {
    println!(
        "{:>8}  {:<16} {:<22} {:<12} {:<10} {:>4}  {:<6} last error or receipt",
        "id", "destination", "case", "kind", "state", "try", "status"
    );
    for d in list {
        let state = if d.leased_until.is_some() {
            "leased"
        } else {
            d.state.as_str()
        };
        let note = d
            .last_error
            .as_deref()
            .or(d.receipt.as_deref())
            .unwrap_or("");
        println!(
            "{:>8}  {:<16} {:<22} {:<12} {:<10} {:>4}  {:<6} {}",
            d.id,
            d.destination,
            d.case_no,
            d.kind.as_str(),
            state,
            d.attempts,
            d.last_status.map(|s| s.to_string()).unwrap_or_default(),
            note.chars().take(60).collect::<String>()
        );
    }
}

/// Ask on the terminal; only `y` or `yes` goes on.
fn confirm(question: &str) -> bool {
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub async fn run(cmd: DeliveriesCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let store = hallgate::store::open_config(config, OpenMode::Tool).await?;
    let code = match cmd {
        DeliveriesCommand::List {
            destination,
            state,
            case_no,
            since,
            limit,
            json,
        } => {
            let (state, leased) = state_arg(state.as_deref())?;
            let list = store
                .deliveries(DeliveryFilter {
                    state,
                    leased,
                    destination,
                    case_no,
                    since_ms: time_arg(since.as_deref(), "since")?,
                    after_id: None,
                    limit: limit.clamp(1, 10_000),
                })
                .await?;
            if json {
                let mut v = serde_json::to_value(&list)?;
                hallgate::record::mask_personal(&mut v);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                table(&list);
            }
            ExitCode::SUCCESS
        }
        DeliveriesCommand::Show { id, json } => {
            let h = manual::history(&*store, id).await?;
            if json {
                let mut v = serde_json::to_value(&h)?;
                hallgate::record::mask_personal(&mut v);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                table(std::slice::from_ref(&h.delivery));
                println!();
                for s in &h.steps {
                    let d = &s.detail;
                    let field = |k: &str| d.get(k).map(|v| v.to_string()).unwrap_or_default();
                    let what = match s.event.as_str() {
                        "attempted" => {
                            format!("status {} in {} ms", field("status"), field("duration_ms"))
                        }
                        "retried" => {
                            format!("retry at {}: {}", field("next_attempt_at"), field("error"))
                        }
                        "delivered" => format!("receipt sha256 {}", field("receipt_sha256")),
                        "dead_lettered" => format!("reason {}", field("reason")),
                        "manually_retried" => format!("by {}: {}", field("by"), field("asked")),
                        _ => d.to_string(),
                    };
                    println!(
                        "{:>8}  {}  {:<17} {}",
                        s.seq,
                        s.at,
                        s.event,
                        hallgate::record::mask_text(&what)
                    );
                }
            }
            ExitCode::SUCCESS
        }
        DeliveriesCommand::Pause { destination } => {
            control(&*store, config, &destination, true).await?
        }
        DeliveriesCommand::Resume { destination } => {
            control(&*store, config, &destination, false).await?
        }
        DeliveriesCommand::Retry {
            id,
            destination,
            state,
            since,
            yes,
        } => {
            let (ids, what) = match (id, destination) {
                (Some(id), _) => (vec![id], format!("retry delivery {id}")),
                (None, Some(d)) => {
                    if state.as_deref() != Some("dead") {
                        anyhow::bail!("--state dead: a retry puts back dead letters only");
                    }
                    let ids = manual::dead_matching(
                        &*store,
                        DeliveryFilter {
                            destination: Some(d.clone()),
                            since_ms: time_arg(since.as_deref(), "since")?,
                            ..DeliveryFilter::default()
                        },
                    )
                    .await?;
                    let since = since.map(|s| format!(" since {s}")).unwrap_or_default();
                    (ids, format!("retry dead deliveries to {d}{since}"))
                }
                (None, None) => anyhow::bail!("give --id N, or --destination D --state dead"),
            };
            if ids.is_empty() {
                println!("no dead letter matches");
            } else if yes
                || confirm(&format!(
                    "{} dead letter(s) will be put back in the queue ({what}). Go on?",
                    ids.len()
                ))
            {
                let asked = Asked {
                    by: cli_user(),
                    what,
                };
                let n = manual::retry(&*store, &ids, &asked).await?;
                println!("{n} delivery(ies) put back in the queue");
            } else {
                println!("nothing retried");
            }
            ExitCode::SUCCESS
        }
    };
    store.close().await?;
    Ok(code)
}

/// `hallgate deliveries pause|resume --destination D`.
async fn control(
    store: &dyn hallgate::store::Store,
    config: &Config,
    destination: &str,
    paused: bool,
) -> anyhow::Result<ExitCode> {
    if !config.destinations().any(|(d, _)| d == destination) {
        anyhow::bail!("--destination `{destination}` is not a destination of the config");
    }
    let action = if paused { "pause" } else { "resume" };
    let asked = Asked {
        by: cli_user(),
        what: format!("{action} deliveries to {destination}"),
    };
    manual::pause(store, destination, paused, &asked).await?;
    println!(
        "{destination}: {} (a running gateway follows within a second)",
        if paused { "paused" } else { "resumed" }
    );
    Ok(ExitCode::SUCCESS)
}
