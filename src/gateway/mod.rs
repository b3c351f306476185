//! Wiring (layer 6): loads the configuration whole ([`load`]), opens the store,
//! builds intake, the sinks and the sources (one `generation` per configuration,
//! swapped whole on `reload`), starts the HTTP server, the delivery workers and the
//! pull sources, and stops them in order (stop accepting, finish or
//! release in-flight deliveries, close the store) so that nothing acknowledged is
//! lost.

mod generation;
mod load;
mod reload;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::admin::Reloads;
use crate::auth::refusals::{Refusals, Refused};
use crate::config::Config;
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::sinks::SinkError;
use crate::store::{self, OpenMode, Store, StoreError};
use crate::sync::Catalogue;
use crate::time::now_ms;
use crate::tls::{ConnLimits, Cut};
use generation::Shared;

pub use load::{file_problems, load, parse};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("token keys: {0}")]
    Auth(String),
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("sync: {0}")]
    Sync(#[from] crate::sync::SyncError),
    #[error("{0}")]
    Supervise(#[from] crate::supervise::SuperviseError),
    #[error("{0}")]
    Tables(#[from] crate::sources::tables::TableError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// A gateway that is serving.
pub struct Running {
    pub addr: SocketAddr,
    /// Serving HTTPS.
    pub https: bool,
    pub store: Arc<dyn Store>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    /// Swaps generations on reload; on shutdown, retires them all.
    reloader: tokio::task::JoinHandle<()>,
    reloads: Option<Reloads>,
    workers: JoinSet<()>,
}

/// Start the gateway. `listener` overrides `gateway.listen` (tests bind
/// `127.0.0.1:0` first and pass the socket). It reloads its configuration from the
/// same file when asked ([`Running::reload`], SIGHUP, `POST /v1/admin/reload`).
pub async fn start(config: Config, listener: Option<TcpListener>) -> Result<Running, GatewayError> {
    launch(config, listener, &crate::mapping::Disk, true).await
}

/// Start the gateway reading mapping files through `files` (the demo's are
/// embedded); such a gateway does not reload.
pub async fn start_with(
    config: Config,
    listener: Option<TcpListener>,
    files: &dyn crate::mapping::Files,
) -> Result<Running, GatewayError> {
    launch(config, listener, files, false).await
}

async fn launch(
    config: Config,
    listener: Option<TcpListener>,
    files: &dyn crate::mapping::Files,
    reloadable: bool,
) -> Result<Running, GatewayError> {
    crate::observe::prometheus();
    // Mappings first: one that cannot compile stops start-up with file and line.
    // The files read are noted with their hashes (for the watch, and the audit of a
    // reload); the demo's embedded ones are not.
    let noted = reload::Noted::default();
    let mappings = if reloadable {
        crate::mapping::load_sets(&config, &noted)?
    } else {
        crate::mapping::load_sets(&config, files)?
    };
    // Certificates next: HTTPS that cannot start must not fall back to plain HTTP.
    let tls = match &config.gateway.tls {
        Some(t) => Some(crate::tls::Reloading::new(t, &config.base_dir())?),
        None => None,
    };
    let store = store::open_config(&config, OpenMode::Serve).await?;
    let mut loaded = Event::new(now_ms(), EventKind::ConfigLoaded);
    loaded.detail = json!({
        "gateway": config.gateway.id,
        "path": config.source_path.display().to_string(),
        "config_sha256": std::fs::read(&config.source_path).ok().map(|b| sha256_hex(&b)),
        "nodes": config.nodes.len(),
        "routes": config.routes.len(),
    });
    store.audit(loaded).await?;
    let listener = match listener {
        Some(l) => l,
        None => {
            let addr = config.gateway.listen.get_ref().clone();
            TcpListener::bind(&addr)
                .await
                .map_err(|source| GatewayError::Listen { addr, source })?
        }
    };
    let addr = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: config.gateway.listen.get_ref().clone(),
            source,
        })?;
    if config.gateway.trust_node_header {
        if !addr.ip().is_loopback() {
            return Err(GatewayError::Auth(format!(
                "gateway.trust_node_header is for development on loopback only, and the gateway listens on {addr}"
            )));
        }
        tracing::warn!(%addr, "gateway.trust_node_header is on: any local process may name itself as any node (development only)");
    }
    let shutdown = CancellationToken::new();
    let catalogue = Catalogue::default();
    catalogue.load(&*store).await?;
    // Refusals before a node is known: budgets per peer, audited in tallies.
    let refusals = Refusals::new(&config.limits, store.clone());
    let mut workers = JoinSet::new();
    workers.spawn(refusals.clone().flush_every_interval(shutdown.clone()));
    let (asks, asked) = tokio::sync::mpsc::channel(4);
    let reloads = reloadable.then_some(asks);
    let shared = Shared {
        store: store.clone(),
        refusals: refusals.clone(),
        catalogue,
        root: shutdown.clone(),
        routes: Arc::new(std::sync::RwLock::new(axum::Router::new())),
        reloads: reloads.clone(),
    };
    let limits = config.limits.clone();
    let config_path = config.source_path.clone();
    let files = reload::loaded(&config_path, noted);
    let live = generation::build(config, mappings, &shared)?
        .serve(&shared)
        .await?;
    let app = generation::swapping(shared.routes.clone());
    let reloader = tokio::spawn(
        reload::Reloader {
            shared,
            live,
            files,
            config_path,
        }
        .run(asked),
    );
    let https = tls.is_some();
    let server = crate::tls::serve_with(
        listener,
        app,
        tls,
        conn_limits(&limits, refusals),
        shutdown.clone(),
    );
    Ok(Running {
        addr,
        https,
        store,
        shutdown,
        server,
        reloader,
        reloads,
        workers,
    })
}

/// The listener's limits; a request head too large to read is a refusal like any
/// other (counted per peer, audited in tallies).
fn conn_limits(limits: &crate::config::Limits, refusals: Arc<Refusals>) -> ConnLimits {
    ConnLimits {
        header_timeout: std::time::Duration::from_secs(limits.header_timeout_seconds.max(1)),
        max_header_bytes: limits.max_header_bytes,
        on_cut: Some(Arc::new(move |addr, cut| {
            if cut == Cut::HeaderTooLarge {
                let peer = crate::tls::Peer { addr, cert: None };
                refusals.tally(Refused::of(
                    Some(&peer),
                    431,
                    cut.as_str(),
                    "request head larger than [limits] max_header_bytes".into(),
                ));
            }
        })),
    }
}

impl Running {
    /// Stop accepting, let in-flight deliveries finish (or give them back), flush the
    /// store.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        let _ = self.reloader.await;
        while self.workers.join_next().await.is_some() {}
        if let Err(e) = self.store.close().await {
            tracing::error!(error = %e, "store did not close cleanly");
        }
    }

    /// Read the configuration file again and serve it if it checks whole (see
    /// `reload`): the report of what changed, or why the old one stays.
    pub async fn reload(&self, by: &str) -> Result<serde_json::Value, String> {
        let Some(reloads) = &self.reloads else {
            return Err("this gateway runs an embedded configuration and does not reload".into());
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let ask = crate::api::admin::ReloadAsk {
            by: by.to_string(),
            reply,
        };
        if reloads.send(ask).await.is_err() {
            return Err("the gateway is stopping".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the gateway is stopping".into()))
    }

    /// A token that stops the gateway when cancelled (e.g. from a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

/// Resolve when SIGTERM or Ctrl-C arrives.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
