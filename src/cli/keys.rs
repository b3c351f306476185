//! `hallgate keys` (the gateway's signing key), `hallgate token` (tokens for trying a
//! node's set-up) and `hallgate certs` (development certificates).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a token for NODE signed with its private key, as the node would send it.
    Issue {
        /// The sending node the token is for (its [nodes.ID] id, with an [auth] table);
        /// the token's iss is the node's issuer and its aud this gateway's id.
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
        /// Bind the token to this client certificate (PEM): its `cnf.x5t#S256`, for a
        /// node whose `client_cert.bind_token` is set.
        #[arg(long)]
        cert: Option<PathBuf>,
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
pub enum KeysCommand {
    /// Make the gateway's signing key (PKCS#8 PEM) and its public key beside it.
    Generate {
        /// Private key path (default: [gateway].signing_key of the config, or its
        /// sm2_signing_key with --alg sm2).
        #[arg(long)]
        out: Option<PathBuf>,
        /// es256 (ECDSA P-256) or sm2 (SM2 with SM3, GB/T 32918).
        #[arg(long, default_value = "es256")]
        alg: String,
    },
    /// Seal every stored payload and record under the current data key ([store]
    /// keys, the first), with progress; then forget the old keys no value is under.
    /// Runs beside a running gateway; start the gateways with the new key first.
    RotateData,
    /// Make a key pair (ES256, or SM2 for a node whose first algorithm is SM2) for each
    /// sending node whose `auth.keys` names a public key file that does not exist yet
    /// (`x.pub.pem`, with its private key `x.key.pem` beside it, mode 0600). Give each
    /// node its private key; the gateway keeps only the public ones.
    Nodes,
}

#[derive(Subcommand)]
pub enum CertsCommand {
    /// A development CA, the gateway's server certificate (localhost, 127.0.0.1) and
    /// one client certificate per sending node, under `--out`.
    Dev {
        #[arg(long, default_value = "certs/dev")]
        out: PathBuf,
    },
}

/// `hallgate token issue`.
pub fn token(cmd: TokenCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Issue {
            node,
            key,
            ttl,
            count,
            cert,
        } => {
            use std::io::Write;
            // The node's entry is all a token needs (its key files may be elsewhere).
            let config = hallgate::config::Config::load(config_path)?;
            let ttl = ttl_seconds(&ttl)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for _ in 0..count {
                writeln!(
                    out,
                    "{}",
                    hallgate::auth::mint::issue(&config, &node, &key, ttl, cert.as_deref())?
                )?;
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `hallgate certs dev`.
pub fn certs(cmd: CertsCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Dev { out } => {
            let config = super::config(config_path)?;
            let written = hallgate::auth::certs::dev(&config, &out)?;
            for p in &written {
                println!("wrote {}", p.display());
            }
            println!(
                "\nTo serve HTTPS with client certificates, add to {0}:\n\n[gateway.tls]\ncert = \"{1}/server.pem\"\nkey = \"{1}/server.key.pem\"\nclient_ca = \"{1}/ca.pem\"\n\nand per node: client_cert = {{ names = [\"ID.nodes.hallgate.test\"], required = true }}",
                config_path.display(),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `hallgate keys rotate-data`.
async fn rotate_data(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::config(config_path)?;
    let keys = hallgate::store::sealed::DataKeys::from_config(&config)?.ok_or_else(|| {
        anyhow::anyhow!("[store] encrypt is off: there is no data key to rotate to")
    })?;
    let store = hallgate::store::open_config(&config, hallgate::store::OpenMode::Tool).await?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos} payloads and records read ({per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let r = hallgate::store::sealed::rotate(&*store, &keys, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    println!(
        "{} payloads and records read, {} sealed again under data key `{}`",
        r.seen,
        r.resealed,
        keys.current()
    );
    for k in &r.forgotten {
        println!("data key `{k}` holds no value any more: it may be removed from [store] keys");
    }
    for k in &r.remaining {
        println!(
            "data key `{k}` still holds values: a gateway may still seal with it; restart it with the new key first, then run this again"
        );
    }
    store.close().await?;
    Ok(if r.remaining.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `hallgate keys generate`.
pub fn keys(cmd: KeysCommand, config_path: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::RotateData => super::runtime()?.block_on(rotate_data(config_path)),
        KeysCommand::Nodes => {
            // The config as written: its key files are what this makes.
            let config = hallgate::config::Config::load(config_path)?;
            let mut made = 0;
            for (id, node) in &config.nodes {
                let Some(auth) = &node.get_ref().auth else {
                    continue;
                };
                let sm2 = auth.algorithms.first().is_some_and(|a| a == "SM2");
                if !sm2 && !auth.algorithms.iter().any(|a| a == "ES256") {
                    continue;
                }
                for public in &auth.keys {
                    let public = config.base_dir().join(public.path());
                    let name = public.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    let Some(stem) = name.strip_suffix(".pub.pem") else {
                        continue;
                    };
                    if public.exists() {
                        continue;
                    }
                    let private = public.with_file_name(format!("{stem}.key.pem"));
                    if sm2 {
                        hallgate::guomi::sm2::generate(&private, &public)?;
                    } else {
                        hallgate::keys::generate_key(&private)?;
                    }
                    println!(
                        "{id}: private key {} (give it to the node), public key {}",
                        private.display(),
                        public.display()
                    );
                    made += 1;
                }
            }
            println!("{made} key pair(s) made");
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Generate { out, alg } => {
            let sm2 = match alg.to_ascii_lowercase().as_str() {
                "es256" => false,
                "sm2" => true,
                other => anyhow::bail!("--alg `{other}`: es256 or sm2"),
            };
            let path = match out {
                Some(p) => p,
                None if sm2 => super::config(config_path)?.sm2_signing_key_path(),
                None => super::config(config_path)?.signing_key_path(),
            };
            let public = hallgate::keys::public_key_path(&path);
            if sm2 {
                let key = hallgate::guomi::sm2::generate(&path, &public)?;
                println!(
                    "SM2 public key (04‖x‖y hex, for peers that take it): {}",
                    key.to_hex()
                );
            } else {
                hallgate::keys::generate_key(&path)?;
            }
            println!(
                "private key {} (keep it secret, never commit it)",
                path.display()
            );
            println!("public key  {}", public.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
