//! `hallgate tables`: the 前置库 exchange tables (check).

use std::process::ExitCode;

use clap::Subcommand;
use hallgate::config::Config;

#[derive(Subcommand)]
pub enum TablesCommand {
    /// Connect to a node's 前置库 and check that every configured table and column
    /// exists with a usable type, naming any that do not; exit 1 on a problem.
    Check {
        /// The node (its [nodes.ID] id, with a [nodes.ID.tables] table).
        #[arg(long)]
        node: String,
    },
}

pub async fn tables(cmd: TablesCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        TablesCommand::Check { node } => {
            let (lines, ok) = hallgate::sources::tables::status::check(config, &node)
                .await
                .map_err(|e| anyhow::anyhow!("{node}: {e}"))?;
            for l in lines {
                println!("{l}");
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
