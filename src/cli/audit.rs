//! `hallgate audit`: verify, checkpoint, query, timeline, export, archive.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use hallgate::config::Config;

use super::time_arg;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain, then hash every stored body and record again against the
    /// events that vouch for them; exit 1 naming what does not follow.
    Verify {
        /// Also walk the archive files in this folder, as one chain with the live log.
        #[arg(long)]
        archives: Option<PathBuf>,
        /// Prove the log still holds this signed checkpoint (needs --public-key).
        #[arg(long, requires = "public_key")]
        checkpoint: Option<PathBuf>,
        /// The gateway's public key (PEM, ES256 or SM2 as the checkpoint says) that
        /// signed the checkpoint.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Walk the chain only; skip hashing every stored body and record again
        /// against the events that vouch for them.
        #[arg(long)]
        chain_only: bool,
    },
    /// Sign the chain head with the gateway key and write it to a file.
    Checkpoint {
        /// Signing key (default: [gateway].signing_key of the config, or its
        /// sm2_signing_key with `[audit] checkpoint_alg = "sm2"`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Output file (default: audit-checkpoint-SEQ.json).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List events, one per line (personal data masked).
    Query {
        #[arg(long)]
        case_no: Option<String>,
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        event: Option<String>,
        /// From this date or RFC 3339 time (inclusive).
        #[arg(long)]
        from: Option<String>,
        /// Until this date or time (exclusive).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// A case (办件) as an auditor reads it, step by step.
    Timeline { case_no: String },
    /// Export events (with the records they accepted) as JSON lines or CSV.
    Export {
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_parser = ["jsonl", "csv"], default_value = "jsonl")]
        format: String,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Include personal data unmasked. The export is audited either way.
        #[arg(long)]
        full: bool,
    },
    /// Move events older than a date to a compressed archive file.
    Archive {
        /// Archive events before this date or RFC 3339 time.
        #[arg(long)]
        before: String,
        #[arg(long, default_value = "audit-archive")]
        dir: PathBuf,
    },
}

pub async fn run(cmd: AuditCommand, config: &Config) -> anyhow::Result<ExitCode> {
    use hallgate::audit::tools;
    let store = match tools::open_store(config).await {
        Ok(s) => s,
        // `verify` keeps exit 1 for a log that does not follow.
        Err(e) if matches!(cmd, AuditCommand::Verify { .. }) => {
            eprintln!(
                "audit log not verified: {}",
                hallgate::observe::error_chain(&e)
            );
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let store = store.as_ref();
    match cmd {
        AuditCommand::Verify {
            archives,
            checkpoint,
            public_key,
            chain_only,
        } => {
            let check = checkpoint.as_deref().zip(public_key.as_deref());
            verify(store, archives.as_deref(), check, chain_only).await
        }
        AuditCommand::Checkpoint { key, out } => {
            let key = key.unwrap_or_else(|| config.checkpoint_key_path());
            let (path, cp) = tools::checkpoint(store, config, &key, out).await?;
            println!(
                "checkpoint #{} {} written to {}",
                cp.seq,
                cp.hash,
                path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Query {
            case_no,
            node,
            kind,
            event,
            from,
            to,
            limit,
        } => {
            let filter = hallgate::store::AuditFilter {
                case_no,
                node,
                kind,
                event,
                from_ms: time_arg(from.as_deref(), "from")?,
                to_ms: time_arg(to.as_deref(), "to")?,
                ..Default::default()
            };
            let rows = tools::rows(store, filter, limit).await?;
            let name = |id: &str| config.node(id).map(|n| n.name.clone()).unwrap_or_default();
            for step in hallgate::audit::timeline::build(&rows, &name) {
                println!(
                    "{}  #{:<7} {:<20} {:<20} {}",
                    step.at,
                    step.seq,
                    step.event,
                    rows.iter()
                        .find(|r| r.seq == step.seq)
                        .and_then(|r| r.case_no.clone())
                        .unwrap_or_default(),
                    hallgate::record::mask_text(&step.summary)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Timeline { case_no } => {
            print!("{}", tools::timeline_text(store, config, &case_no).await?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            from,
            to,
            format,
            out,
            full,
        } => {
            let filter = hallgate::store::AuditFilter {
                from_ms: time_arg(from.as_deref(), "from")?,
                to_ms: time_arg(to.as_deref(), "to")?,
                ..Default::default()
            };
            let format = if format == "csv" {
                tools::Format::Csv
            } else {
                tools::Format::Jsonl
            };
            let n = match &out {
                Some(path) => {
                    let mut f = std::io::BufWriter::new(
                        std::fs::File::create(path)
                            .with_context(|| format!("cannot write {}", path.display()))?,
                    );
                    tools::export(store, filter, format, full, &mut f).await?
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    tools::export(store, filter, format, full, &mut stdout).await?
                }
            };
            eprintln!(
                "exported {n} events{}",
                if full {
                    " WITH UNMASKED PERSONAL DATA (audited)"
                } else {
                    " (personal data masked)"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Archive { before, dir } => {
            let before_ms = time_arg(Some(&before), "before")?.unwrap_or(0);
            match tools::archive(store, before_ms, &dir).await? {
                Some((path, n)) => println!("archived {n} events to {}", path.display()),
                None => println!("nothing to archive before {before}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `hallgate audit verify`: the chain (with archives and a checkpoint when given),
/// then, unless `chain_only`, the evidence it vouches for.
async fn verify(
    store: &dyn hallgate::store::Store,
    archives: Option<&std::path::Path>,
    check: Option<(&std::path::Path, &std::path::Path)>,
    chain_only: bool,
) -> anyhow::Result<ExitCode> {
    use hallgate::audit::tools;
    let (r, cp) = match tools::verify(store, archives, check).await {
        Ok(v) => v,
        Err(e) => return Ok(not_intact(e)),
    };
    println!(
        "audit log intact: {} events checked ({} archived, {} live), {} chain, head #{} {}",
        r.archived + r.live,
        r.archived,
        r.live,
        r.alg.as_str(),
        r.head_seq,
        r.head_hash
    );
    if let Some(t) = r.trusted_through {
        println!("events up to #{t} are archived and were not checked (pass --archives DIR)");
    }
    if let Some(c) = cp {
        println!(
            "checkpoint #{} of {} ({}) is in the log unaltered",
            c.seq, c.gateway, c.at
        );
    }
    if chain_only {
        println!("evidence not checked (--chain-only)");
        return Ok(ExitCode::SUCCESS);
    }
    match tools::verify_evidence(store, archives).await {
        Ok(e) => {
            println!(
                "evidence intact: {} message(s), {} body(ies) and {} record(s) hash to what the chain recorded ({} body(ies) not retained, their hashes compared)",
                e.messages, e.bodies, e.records, e.not_retained
            );
            if e.unchecked_archived {
                println!(
                    "messages whose events are archived were not checked (pass --archives DIR)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(not_intact(e)),
    }
}

/// A chain, archive, checkpoint or evidence that does not hold is a finding (exit 1);
/// a folder, key or store that cannot be read is not one (exit 2).
fn not_intact(e: hallgate::audit::AuditError) -> ExitCode {
    use hallgate::audit::AuditError;
    match e {
        e @ (AuditError::Broken { .. }
        | AuditError::Archive { .. }
        | AuditError::Evidence(_)
        | AuditError::Checkpoint(_)) => {
            eprintln!("audit log NOT intact: {e}");
            ExitCode::FAILURE
        }
        e => {
            eprintln!("audit log not verified: {e}");
            ExitCode::from(2)
        }
    }
}
