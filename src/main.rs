//! The `hallgate` command line. Everything it does lives in the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hallgate::config::Config;

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
    /// Validate the configuration; exit non-zero on any error.
    Check,
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
    },
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
    hallgate::observe::init_logging(level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check => match Config::load(&cli.config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} nodes, {} routes)",
                    cli.config.display(),
                    c.nodes.len(),
                    c.routes.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
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
        } => runtime()?.block_on(async {
            let r = hallgate::receiver::Receiver::start(&name, &listen).await?;
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
