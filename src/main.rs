//! The `hallgate` command line. Everything it does lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Decoding allocates many small strings and maps per record; mimalloc handles that
/// pattern markedly faster than the system allocator (BENCHMARKS.md, mapping).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use hallgate::config::Config;
use hallgate::mapping::{Disk, Mapping, MappingSet, tool};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "hallgate",
    version,
    about = "Data-exchange gateway for government-service platforms"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        default_value = "hallgate.toml",
        env = "HALLGATE_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM or Ctrl-C.
    Serve,
    /// Validate the configuration, compile every mapping and run the mappings'
    /// examples (each failure shown as a diff); exit non-zero on any error.
    Check {
        /// Check these mapping files (and their examples) instead of the configuration.
        #[arg(long)]
        mapping: Vec<PathBuf>,
    },
    /// Decode native messages through mappings and print canonical records as JSON
    /// lines. Exit 0: all valid; 1: a record rejected (one line per problem on
    /// stderr); 2: an input unusable (not well-formed, wrong encoding, over a limit).
    Map {
        /// One mapping file. Without it, `--node` uses that node's mappings from the
        /// configuration (forms, SOAP, several kinds per body).
        #[arg(long, conflicts_with = "node", required_unless_present = "node")]
        mapping: Option<PathBuf>,
        /// A node of the configuration.
        #[arg(long)]
        node: Option<String>,
        /// Content type of the inputs (default: from the file extension, else sniffed).
        #[arg(long)]
        content_type: Option<String>,
        /// Only mappings of this kind (as posting to /v1/records/KIND).
        #[arg(long)]
        kind: Option<String>,
        /// Render canonical JSON lines back to the native format instead.
        #[arg(long)]
        render: bool,
        /// Threads for a large input (XML records or JSON lines, cut at record
        /// boundaries; output order is kept). Default: the machine's cores.
        #[arg(long)]
        jobs: Option<usize>,
        /// Files to read (`-` for stdin).
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// Run a simulated receiving platform (for trying a config or load tests):
    /// it acknowledges deliveries at POST /records and drops repeats with 409.
    Receive {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18201")]
        listen: String,
        /// Name used in its receipts.
        #[arg(long, default_value = "city-platform")]
        name: String,
        /// Answer every delivery with this status (e.g. 503 to test retries).
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// Be a simulated provincial hall: also serve the sync APIs (docs/sync.md)
        /// with this many cases applied for online, speaking the dialect of the
        /// config's node `--name`.
        #[arg(long)]
        hall_cases: Option<u64>,
    },
    /// The tamper-evident audit log: verify, checkpoint, query, timeline, export, archive.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The gateway's signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Tokens for testing a node's set-up.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Development certificates (never for production: see certs/README.md).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Synchronisation with pulled nodes: status, pause, resume, rewind, reconcile,
    /// backfill (docs/sync.md).
    #[command(subcommand)]
    Sync(SyncCommand),
    /// The item catalogue (事项目录): pull it now, show it, diff a node's against it.
    #[command(subcommand)]
    Catalogue(CatalogueCommand),
    /// Run the gateway on its embedded demo configuration with simulated halls.
    Demo {
        /// Folder for the demo's SQLite store (created; emptied first).
        #[arg(long, default_value = "hallgate-demo-data")]
        data_dir: PathBuf,
        /// Send the samples, print the account, and exit instead of serving on.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Every pull source: cursor, lag, last success and error, records pulled.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop pulling a source (a running gateway stops at its next page).
    Pause {
        #[arg(long)]
        node: String,
    },
    Resume {
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
enum CatalogueCommand {
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

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; exit 1 naming the first event that does not follow.
    Verify {
        /// Also walk the archive files in this folder, as one chain with the live log.
        #[arg(long)]
        archives: Option<PathBuf>,
        /// Prove the log still holds this signed checkpoint (needs --public-key).
        #[arg(long, requires = "public_key")]
        checkpoint: Option<PathBuf>,
        /// The gateway's public key (PEM) that signed the checkpoint.
        #[arg(long)]
        public_key: Option<PathBuf>,
    },
    /// Sign the chain head with the gateway key and write it to a file.
    Checkpoint {
        /// Signing key (default: [gateway].signing_key of the config).
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

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a token for NODE signed with its private key, as the node would send it.
    Issue {
        #[arg(long)]
        node: String,
        /// The node's private key (PKCS#8 PEM; for HS256 a file holding the secret).
        #[arg(long)]
        key: PathBuf,
        /// Lifetime, e.g. 10m, 1h, 300s.
        #[arg(long, default_value = "10m")]
        ttl: String,
        /// Print this many tokens, one per line, each with its own jti (load tests).
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

fn ttl_seconds(s: &str) -> anyhow::Result<i64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .with_context(|| format!("--ttl `{s}`: a number and s, m or h"))?;
    Ok(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => anyhow::bail!("--ttl `{s}`: use s, m or h"),
    })
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make the gateway's ES256 signing key (PKCS#8 PEM) and its public key beside it.
    Generate {
        /// Private key path (default: [gateway].signing_key of the config).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// A development CA, the gateway's server certificate (localhost, 127.0.0.1) and
    /// one client certificate per sending node, under `--out`.
    Dev {
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story on stdout; its log shows only errors by default.
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    hallgate::observe::init_logging(level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", hallgate::observe::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { mapping } => check(&cli.config, &mapping),
        Command::Map {
            mapping,
            node,
            content_type,
            kind,
            render,
            jobs,
            inputs,
        } => {
            let kind = match kind.as_deref() {
                None => None,
                Some(k) => Some(
                    hallgate::record::Kind::parse(k)
                        .with_context(|| format!("--kind {k}: not a record kind"))?,
                ),
            };
            let (set, limits, source) = match (mapping, node) {
                (Some(file), _) => {
                    let m = Mapping::load(&file, &Disk)?;
                    let limits = hallgate::mapping::Limits {
                        max_body_bytes: 1 << 30,
                        max_records: usize::MAX,
                        ..hallgate::mapping::Limits::default()
                    };
                    (MappingSet::new(vec![Arc::new(m)]), limits, None)
                }
                (None, Some(node)) => {
                    let config = Config::load(&cli.config)?;
                    let mut sets = config.load_mappings(&Disk)?;
                    let set = sets.remove(&node).with_context(|| {
                        format!("node `{node}` has no mappings in {}", cli.config.display())
                    })?;
                    (set, config.mapping_limits(), Some(node))
                }
                (None, None) => anyhow::bail!("give --mapping FILE or --node ID"),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut err = std::io::stderr().lock();
            let code = if render {
                tool::render(&set, &inputs, &mut out, &mut err)
            } else {
                let req = tool::MapRequest {
                    inputs: &inputs,
                    content_type: content_type.as_deref(),
                    kind,
                    source: source.as_deref(),
                    limits: &limits,
                    jobs: jobs
                        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                        .unwrap_or(1)
                        .max(1),
                };
                tool::map(&set, &req, &mut out, &mut err)
            };
            Ok(ExitCode::from(code))
        }
        Command::Serve => {
            let config = Config::load(&cli.config)?;
            runtime()?.block_on(async {
                let running = hallgate::gateway::start(config, None).await?;
                tracing::info!(addr = %running.addr, "hallgate serving");
                hallgate::gateway::signal().await;
                tracing::info!("shutting down: no new requests, finishing in-flight deliveries");
                running.shutdown().await;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Receive {
            listen,
            name,
            status,
            hall_cases,
        } => runtime()?.block_on(async {
            let r = match hall_cases {
                None => hallgate::receiver::Receiver::start(&name, &listen).await?,
                Some(n) => {
                    let hall = hallgate::sync::hall::Hall::start(&name, &listen).await?;
                    if let Ok(config) = Config::load(&cli.config)
                        && let Some(set) = config.load_mappings(&Disk)?.remove(&name)
                    {
                        hall.set_mappings(set);
                    }
                    hall.add_cases(
                        (1..=n)
                            .map(|i| hallgate::sync::hall::sample_case(i, i as usize))
                            .collect(),
                    );
                    println!(
                        "{name}: provincial hall sync APIs at {0}/api/cases, {0}/api/holdings, {0}/api/items ({n} cases)",
                        hall.base()
                    );
                    hall.receiver.clone()
                }
            };
            r.limit_log(10_000);
            r.set_script(hallgate::receiver::Script {
                status,
                ..Default::default()
            });
            println!("{name} receiving at {}", r.url());
            hallgate::gateway::signal().await;
            println!("{name}: {} record(s) acknowledged", r.accepted_total());
            r.stop();
            Ok(ExitCode::SUCCESS)
        }),
        Command::Audit(cmd) => {
            let config = Config::load(&cli.config)?;
            runtime()?.block_on(audit(cmd, &config))
        }
        Command::Token(TokenCommand::Issue {
            node,
            key,
            ttl,
            count,
        }) => {
            use std::io::Write;
            let config = Config::load(&cli.config)?;
            let ttl = ttl_seconds(&ttl)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..count {
                writeln!(
                    out,
                    "{}",
                    hallgate::auth::token::issue(&config, &node, &key, ttl)?
                )?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(CertsCommand::Dev { out }) => {
            let config = Config::load(&cli.config)?;
            let written = hallgate::auth::certs::dev(&config, &out)?;
            for p in &written {
                println!("wrote {}", p.display());
            }
            println!(
                "\nTo serve HTTPS with client certificates, add to {0}:\n\n[gateway.tls]\ncert = \"{1}/server.pem\"\nkey = \"{1}/server.key.pem\"\nclient_ca = \"{1}/ca.pem\"\n\nand per node: client_cert = {{ names = [\"ID.nodes.hallgate.test\"], required = true }}",
                cli.config.display(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Generate { out }) => {
            let path = match out {
                Some(p) => p,
                None => Config::load(&cli.config)?.signing_key_path(),
            };
            let public = hallgate::audit::checkpoint::generate_key(&path)?;
            println!(
                "private key {} (keep it secret, never commit it)",
                path.display()
            );
            println!("public key  {}", public.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync(cmd) => {
            let config = Config::load(&cli.config)?;
            runtime()?.block_on(sync(cmd, &config))
        }
        Command::Catalogue(cmd) => {
            let config = Config::load(&cli.config)?;
            runtime()?.block_on(catalogue(cmd, &config))
        }
        Command::Demo { data_dir, once } => runtime()?.block_on(async {
            hallgate::demo::run(&data_dir, once).await?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn time_arg(v: Option<&str>, name: &str) -> anyhow::Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(t) => hallgate::ingress::parse_time(t)
            .map(Some)
            .with_context(|| format!("--{name}: `{t}` is not a date or RFC 3339 time")),
    }
}

fn sync_api(config: &Config, node: &str) -> anyhow::Result<hallgate::sync::Api> {
    let keys = Arc::new(hallgate::auth::outbound::GatewayKeys::load(config)?);
    Ok(hallgate::sync::Api::new(config, node, &keys)?)
}

async fn sync(cmd: SyncCommand, config: &Config) -> anyhow::Result<ExitCode> {
    use hallgate::sync;
    let store = hallgate::audit::tools::open_store(config).await?;
    let store = store.as_ref();
    match cmd {
        SyncCommand::Status { json } => {
            let status = sync::status(config, store).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", sync::status_table(&status));
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
            let to = time_arg(to.as_deref(), "to")?.unwrap_or_else(hallgate::store::now_ms);
            let api = sync_api(config, &node)?;
            let started = std::time::Instant::now();
            // Their list may come in their own format, read with their mappings.
            let mappings = config.load_mappings(&Disk)?.remove(&node);
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
            let to = time_arg(to.as_deref(), "to")?.unwrap_or_else(hallgate::store::now_ms);
            let rate = rate.unwrap_or_else(|| {
                config
                    .nodes
                    .get(&node)
                    .and_then(|n| n.get_ref().destination.as_ref())
                    .and_then(|d| d.rate.as_ref())
                    .map(|r| r.per_second as usize)
                    .unwrap_or(100)
            });
            let b = sync::reconcile::backfill(
                config,
                store,
                &sync::reconcile::BackfillRequest {
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

async fn catalogue(cmd: CatalogueCommand, config: &Config) -> anyhow::Result<ExitCode> {
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

async fn audit(cmd: AuditCommand, config: &Config) -> anyhow::Result<ExitCode> {
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
        } => {
            let check = checkpoint.as_deref().zip(public_key.as_deref());
            match tools::verify(store, archives.as_deref(), check).await {
                Ok((r, cp)) => {
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
                        println!(
                            "events up to #{t} are archived and were not checked (pass --archives DIR)"
                        );
                    }
                    if let Some(c) = cp {
                        println!(
                            "checkpoint #{} of {} ({}) is in the log unaltered",
                            c.seq, c.gateway, c.at
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                // A chain, archive or checkpoint that does not follow is a finding; a
                // folder, key or store that cannot be read is not one (exit 2).
                Err(
                    e @ (hallgate::audit::AuditError::Broken { .. }
                    | hallgate::audit::AuditError::Archive { .. }
                    | hallgate::audit::AuditError::Checkpoint(_)),
                ) => {
                    eprintln!("audit log NOT intact: {e}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("audit log not verified: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        AuditCommand::Checkpoint { key, out } => {
            let key = key.unwrap_or_else(|| config.signing_key_path());
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

fn check(config_path: &std::path::Path, mapping_files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if !mapping_files.is_empty() {
        let mut sets = Vec::new();
        for f in mapping_files {
            match Mapping::load(f, &Disk) {
                Ok(m) => sets.push((f.display().to_string(), MappingSet::new(vec![Arc::new(m)]))),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        let refs: Vec<(String, &MappingSet)> = sets.iter().map(|(n, s)| (n.clone(), s)).collect();
        let ok = tool::run_examples(
            &refs,
            &hallgate::mapping::Limits::default(),
            &Disk,
            &mut out,
        );
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let sets = match config.load_mappings(&Disk) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let refs: Vec<(String, &MappingSet)> = sets.iter().map(|(n, s)| (n.clone(), s)).collect();
    let ok = tool::run_examples(&refs, &config.mapping_limits(), &Disk, &mut out);
    let mappings: usize = sets.values().map(|s| s.mappings.len()).sum();
    if ok {
        println!(
            "{}: ok ({} nodes, {} routes, {} mappings)",
            config_path.display(),
            config.nodes.len(),
            config.routes.len(),
            mappings
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{}: mapping examples failed (see above)",
            config_path.display()
        );
        Ok(ExitCode::FAILURE)
    }
}
