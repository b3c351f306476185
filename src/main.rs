//! The `hallgate` command line: the commands and their dispatch. Each command group
//! parses its arguments and calls the library in its own module under `cli/`.
#![forbid(unsafe_code)]

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

/// Decoding allocates many small strings and maps per record; mimalloc handles that
/// pattern markedly faster than the system allocator (BENCHMARKS.md, mapping).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

use cli::audit::AuditCommand;
use cli::deliveries::DeliveriesCommand;
use cli::keys::{CertsCommand, KeysCommand, TokenCommand};
use cli::sync::{CatalogueCommand, SyncCommand};

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
    /// Log lines as `text` or `json` (one object per line); default: the config's
    /// `[log] format`, else text.
    #[arg(long, global = true, env = "HALLGATE_LOG_FORMAT")]
    log_format: Option<String>,
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
    Map(cli::map::MapArgs),
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
    /// The 前置库 exchange tables: check a node's tables and columns
    /// (docs/exchange-tables.md).
    #[command(subcommand)]
    Tables(cli::tables::TablesCommand),
    /// The item catalogue (事项目录): pull it now, show it, diff a node's against it.
    #[command(subcommand)]
    Catalogue(CatalogueCommand),
    /// Print the OpenAPI 3.1 document of the HTTP API (what `GET /openapi.json` serves).
    Openapi,
    /// Ask the running gateway to reload its configuration (as SIGHUP does): checked
    /// whole first; on a problem the old one keeps serving and file:line is printed.
    Reload(cli::reload::ReloadArgs),
    /// 电子监察: the efficiency report and the red and yellow lists.
    #[command(subcommand)]
    Supervise(cli::supervise::SuperviseCommand),
    /// The people who log in to the console: add, passwd, disable, enable, list.
    #[command(subcommand)]
    Users(cli::users::UsersCommand),
    /// The delivery queue and its dead letters: list, show, retry (audited).
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its own story on stdout; its log shows only errors by default.
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "error"
    } else {
        "info"
    };
    let format = cli
        .log_format
        .clone()
        .or_else(|| hallgate::config::log_format_of(&cli.config));
    let format = match format.as_deref().map(hallgate::observe::LogFormat::parse) {
        None => hallgate::observe::LogFormat::Text,
        Some(Some(f)) => f,
        Some(None) => {
            eprintln!(
                "error: log format `{}`: text or json",
                format.unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
    };
    hallgate::observe::init_logging(level, format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", hallgate::observe::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_path();
    match cli.command {
        Command::Check { mapping } => cli::map::check(config, &mapping),
        Command::Map(args) => cli::map::map(args, config),
        Command::Serve => cli::serve::serve(config),
        Command::Receive {
            listen,
            name,
            status,
            hall_cases,
        } => cli::serve::receive(
            cli::serve::Receive {
                listen,
                name,
                status,
                hall_cases,
            },
            config,
        ),
        Command::Audit(cmd) => {
            // An auditor's copy of the config need not carry the nodes' key files.
            let config = hallgate::config::Config::load(config)?;
            cli::runtime()?.block_on(cli::audit::run(cmd, &config))
        }
        Command::Token(cmd) => cli::keys::token(cmd, config),
        Command::Certs(cmd) => cli::keys::certs(cmd, config),
        Command::Keys(cmd) => cli::keys::keys(cmd, config),
        Command::Sync(cmd) => {
            let config = cli::config(config)?;
            cli::runtime()?.block_on(cli::sync::sync(cmd, &config))
        }
        Command::Tables(cmd) => {
            let config = cli::config(config)?;
            cli::runtime()?.block_on(cli::tables::tables(cmd, &config))
        }
        Command::Catalogue(cmd) => {
            let config = cli::config(config)?;
            cli::runtime()?.block_on(cli::sync::catalogue(cmd, &config))
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&hallgate::api::openapi_document())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(args) => cli::reload::reload(args, config),
        Command::Supervise(cmd) => {
            let config = cli::config(config)?;
            cli::runtime()?.block_on(cli::supervise::run(cmd, &config))
        }
        Command::Users(cmd) => {
            let config = cli::config(config)?;
            cli::runtime()?.block_on(cli::users::run(cmd, &config))
        }
        Command::Deliveries(cmd) => {
            let config = cli::config(config)?;
            cli::runtime()?.block_on(cli::deliveries::run(cmd, &config))
        }
        Command::Demo { data_dir, once } => cli::serve::demo(&data_dir, once),
    }
}
