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
    hallgate::observe::init_logging();
    let cli = Cli::parse();
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
