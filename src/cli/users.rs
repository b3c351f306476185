//! `hallgate users` (add, passwd, disable, enable, list): the people who log in to
//! the console (docs/console.md), kept in the config's store with Argon2id password
//! hashes. A password is read from standard input (one line), never from the
//! command line; each change is audited with the operating-system user who made it.

use std::io::BufRead;
use std::process::ExitCode;

use clap::Subcommand;
use hallgate::config::Config;
use hallgate::console::password;
use hallgate::event::{Event, EventKind};
use hallgate::store::console::{ConsoleOp, ConsoleOut, ConsoleUser};
use hallgate::store::{OpenMode, Store};
use serde_json::json;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from standard input.
    Add {
        name: String,
        /// auditor or operator (repeat for both).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// Set a user's password (read from standard input); unlocks the user.
    Passwd { name: String },
    /// Stop a user from logging in; their sessions end.
    Disable { name: String },
    /// Let a disabled user log in again.
    Enable { name: String },
    /// Every user with roles and state.
    List,
}

/// Who runs the command, as its audit event says.
fn cli_user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli {user}")
}

fn read_password() -> anyhow::Result<String> {
    eprintln!(
        "password (at least {} characters), then Enter:",
        password::MIN_LEN
    );
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

async fn user(store: &dyn Store, name: &str) -> anyhow::Result<Option<ConsoleUser>> {
    match store.console(ConsoleOp::User(name.to_string())).await? {
        ConsoleOut::User(u) => Ok(u),
        _ => Ok(None),
    }
}

async fn put(store: &dyn Store, u: ConsoleUser, what: &str) -> anyhow::Result<()> {
    let mut e = Event::new(hallgate::time::now_ms(), EventKind::ConsoleUserChanged);
    e.detail = json!({ "user": u.name, "roles": u.roles, "disabled": u.disabled, "change": what, "by": cli_user() });
    store.console(ConsoleOp::PutUser(u, e)).await?;
    Ok(())
}

pub async fn run(cmd: UsersCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let store = hallgate::store::open_config(config, OpenMode::Tool).await?;
    let s = &*store;
    let missing = |name: &str| anyhow::anyhow!("no console user `{name}` (hallgate users list)");
    match cmd {
        UsersCommand::Add { name, roles } => {
            if !valid_name(&name) {
                anyhow::bail!("a user name is 1 to 64 letters, digits, '-', '_', '.' or '@'");
            }
            if let Some(r) = roles
                .iter()
                .find(|r| !["auditor", "operator"].contains(&r.as_str()))
            {
                anyhow::bail!("--role `{r}`: auditor or operator");
            }
            if user(s, &name).await?.is_some() {
                anyhow::bail!("console user `{name}` exists (hallgate users passwd {name})");
            }
            let hash = password::hash(&read_password()?)?;
            let u = ConsoleUser {
                name: name.clone(),
                roles,
                password_hash: hash,
                disabled: false,
                failures: 0,
                locked_until_ms: None,
            };
            put(s, u, "added").await?;
            println!("console user `{name}` added");
        }
        UsersCommand::Passwd { name } => {
            let mut u = user(s, &name).await?.ok_or_else(|| missing(&name))?;
            u.password_hash = password::hash(&read_password()?)?;
            u.failures = 0;
            u.locked_until_ms = None;
            put(s, u, "password").await?;
            println!("console user `{name}`: new password set");
        }
        UsersCommand::Disable { name } => {
            let mut u = user(s, &name).await?.ok_or_else(|| missing(&name))?;
            u.disabled = true;
            put(s, u, "disabled").await?;
            println!("console user `{name}` disabled; their sessions ended");
        }
        UsersCommand::Enable { name } => {
            let mut u = user(s, &name).await?.ok_or_else(|| missing(&name))?;
            u.disabled = false;
            u.failures = 0;
            u.locked_until_ms = None;
            put(s, u, "enabled").await?;
            println!("console user `{name}` enabled");
        }
        UsersCommand::List => {
            if let ConsoleOut::Users(all) = s.console(ConsoleOp::Users).await? {
                let now = hallgate::time::now_ms();
                println!("{:<24} {:<18} state", "user", "roles");
                for u in all {
                    let state = match u.locked_until_ms {
                        _ if u.disabled => "disabled".to_string(),
                        Some(t) if t > now => {
                            format!("locked until {}", hallgate::time::rfc3339(t))
                        }
                        _ => "active".to_string(),
                    };
                    println!("{:<24} {:<18} {state}", u.name, u.roles.join(","));
                }
            }
        }
    }
    store.close().await?;
    Ok(ExitCode::SUCCESS)
}
