//! The command line's modules: one per command group, each parsing its arguments
//! (clap) and calling the library. `main.rs` only dispatches.

pub mod audit;
pub mod deliveries;
pub mod keys;
pub mod map;
pub mod reload;
pub mod serve;
pub mod supervise;
pub mod sync;
pub mod tables;
pub mod users;

use std::path::Path;

use anyhow::Context;
use hallgate::config::Config;

/// The async runtime for commands that need one.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A `--from`/`--to` argument: a date or an RFC 3339 time.
pub fn time_arg(v: Option<&str>, name: &str) -> anyhow::Result<Option<i64>> {
    match v {
        None => Ok(None),
        Some(t) => hallgate::time::parse_time(t)
            .map(Some)
            .with_context(|| format!("--{name}: `{t}` is not a date or RFC 3339 time")),
    }
}

/// The configuration, checked whole (values, references and the files it names).
pub fn config(path: &Path) -> anyhow::Result<Config> {
    Ok(hallgate::gateway::load(path)?)
}
