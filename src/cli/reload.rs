//! `hallgate reload`: ask the running gateway to read its configuration again,
//! through its admin endpoint (`POST /v1/admin/reload`, operator role), and print
//! what changed, or the problem with file and line while the old configuration keeps
//! serving. SIGHUP does the same without credentials (systemd's `ExecReload`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use hallgate::config::ClientTls;

#[derive(Args)]
pub struct ReloadArgs {
    /// The running gateway's base URL (default: gateway.listen from the config, over
    /// HTTPS when it has [gateway.tls]).
    #[arg(long)]
    url: Option<String>,
    /// An operator node's token.
    #[arg(long, env = "HALLGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Sign a token here instead: the operator node's id (with --key).
    #[arg(long, requires = "key", conflicts_with = "token")]
    node: Option<String>,
    /// The operator node's private key (PKCS#8 PEM).
    #[arg(long, requires = "node")]
    key: Option<PathBuf>,
    /// CA bundle the gateway's certificate is checked against (HTTPS).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// A client certificate (PEM) for a gateway that asks for one, with --client-key.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// Print the gateway's JSON answer.
    #[arg(long)]
    json: bool,
}

/// Where the running gateway listens, read from the file as it is on disk (which
/// may be the very file being reloaded, so it is not checked whole here).
fn url_from(config_path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not TOML; give the gateway's address with --url",
            config_path.display()
        )
    })?;
    let gateway = table.get("gateway").and_then(|g| g.as_table());
    let listen = gateway
        .and_then(|g| g.get("listen"))
        .and_then(|l| l.as_str())
        .with_context(|| format!("{}: no gateway.listen; use --url", config_path.display()))?;
    let https = gateway.is_some_and(|g| g.contains_key("tls"));
    let listen = listen.replace("0.0.0.0", "127.0.0.1");
    Ok(format!(
        "{}://{listen}",
        if https { "https" } else { "http" }
    ))
}

pub fn reload(args: ReloadArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let url = match &args.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => url_from(config_path)?,
    };
    let token = match (&args.token, &args.node, &args.key) {
        (Some(t), _, _) => Some(t.clone()),
        (None, Some(node), Some(key)) => {
            // The node's entry is all a token needs; the rest of the file is the
            // gateway's to check (and report), so it is not checked here.
            let text = std::fs::read_to_string(config_path)
                .with_context(|| format!("cannot read {}", config_path.display()))?;
            let config = hallgate::config::Config::parse_unchecked(&text, config_path)?;
            Some(hallgate::auth::mint::issue(&config, node, key, 60, None)?)
        }
        _ => None,
    };
    let tls = ClientTls {
        ca: args.ca.as_ref().map(|p| p.display().to_string()),
        cert: args.client_cert.as_ref().map(|p| p.display().to_string()),
        key: args.client_key.as_ref().map(|p| p.display().to_string()),
    };
    let client = hallgate::tls::client_builder(hallgate::tls::http_client(), &tls, Path::new("."))?
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .context("cannot build the HTTP client")?;
    super::runtime()?.block_on(async {
        let mut req = client.post(format!("{url}/v1/admin/reload"));
        if let Some(t) = &token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {url}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if args.json {
            println!("{}", serde_json::to_string_pretty(&body)?);
        }
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("(no message)");
            eprintln!("not reloaded ({status}): {message}");
            return Ok(ExitCode::FAILURE);
        }
        if !args.json {
            print_report(&body);
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print_report(r: &serde_json::Value) {
    let list = |v: &serde_json::Value| {
        let items: Vec<&str> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    println!("reloaded at {}", r["at"].as_str().unwrap_or(""));
    for what in ["nodes", "destinations"] {
        println!(
            "{what}: added {}; removed {}; changed {}",
            list(&r[what]["added"]),
            list(&r[what]["removed"]),
            list(&r[what]["changed"])
        );
    }
    for k in r["kept_backlog"].as_array().into_iter().flatten() {
        println!(
            "destination {} removed: {} pending and {} dead deliveries kept in the store (delivered if it is added back)",
            k["destination"].as_str().unwrap_or(""),
            k["pending"],
            k["dead"]
        );
    }
    for f in r["files"].as_array().into_iter().flatten() {
        println!(
            "  {}  {}",
            f["sha256"].as_str().unwrap_or(""),
            f["path"].as_str().unwrap_or("")
        );
    }
}
