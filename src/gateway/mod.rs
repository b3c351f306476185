//! Wiring (layer 6): loads the configuration whole ([`load`]), opens the store,
//! builds intake, the sinks and the sources, starts the HTTP server, the delivery
//! workers and the pull sources, and stops them in order (stop accepting, finish or
//! release in-flight deliveries, close the store) so that nothing acknowledged is
//! lost.

mod load;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::auth::outbound::GatewayKeys;
use crate::auth::refusals::{Refusals, Refused};
use crate::auth::token::Verifier;
use crate::config::Config;
use crate::delivery::{self, Wake};
use crate::event::{Event, EventKind};
use crate::hash::sha256_hex;
use crate::intake::Intake;
use crate::sinks::{self, SinkError};
use crate::sources::http::HttpSource;
use crate::store::{self, OpenMode, Store, StoreError};
use crate::sync::Catalogue;
use crate::time::now_ms;
use crate::tls::{ConnLimits, Cut};

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
    workers: JoinSet<()>,
}

/// Start the gateway. `listener` overrides `gateway.listen` (tests bind
/// `127.0.0.1:0` first and pass the socket).
pub async fn start(config: Config, listener: Option<TcpListener>) -> Result<Running, GatewayError> {
    start_with(config, listener, &crate::mapping::Disk).await
}

/// Start the gateway reading mapping files through `files` (the demo's are embedded).
pub async fn start_with(
    config: Config,
    listener: Option<TcpListener>,
    files: &dyn crate::mapping::Files,
) -> Result<Running, GatewayError> {
    crate::observe::prometheus();
    crate::observe::zero(
        config
            .nodes
            .iter()
            .filter(|(_, n)| n.get_ref().accept.is_some())
            .map(|(id, _)| id.as_str()),
        config.destinations().map(|(id, _)| id),
    );
    // Mappings first: one that cannot compile stops start-up with file and line.
    let mappings = Arc::new(crate::mapping::load_sets(&config, files)?);
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
    let wake = Wake::new(&config);
    let keys = Arc::new(GatewayKeys::load(&config).map_err(|e| GatewayError::Auth(e.to_string()))?);
    // Sinks and their workers: retries, order and leases are the workers'.
    let sinks = sinks::build(&config, &mappings, &keys)?;
    // A destination paused before a restart stays paused from the first lease on.
    let paused = store.paused_destinations().await?;
    let mut workers = delivery::spawn_workers(
        &config,
        &sinks,
        store.clone(),
        wake.clone(),
        shutdown.clone(),
        &paused,
    );
    let tokens = Arc::new(Verifier::new(&config).map_err(|e| GatewayError::Auth(e.to_string()))?);
    let catalogue = Catalogue::default();
    catalogue.load(&*store).await?;
    let limits = config.limits.clone();
    let config = Arc::new(config);
    // Intake: the one admit-and-store path of every source.
    let intake = Arc::new(Intake::new(
        config.clone(),
        store.clone(),
        mappings,
        catalogue.clone(),
        wake.clone(),
    ));
    // Back-pressure: which bounded destinations are full, measured in the store.
    workers.spawn(
        intake
            .backlog
            .clone()
            .watch(store.clone(), shutdown.clone()),
    );
    // Sources that read on their own schedule, and the catalogue they are checked by.
    for source in crate::sources::pull::pullers(&intake, &keys)? {
        workers.spawn(source.run(shutdown.clone()));
    }
    if let Some(c) = &config.catalogue {
        let api = crate::sync::Api::new(&config, &c.source, &keys)?;
        crate::sync::spawn_refresh(
            config.clone(),
            store.clone(),
            catalogue,
            api,
            &mut workers,
            shutdown.clone(),
        )?;
    }
    // Refusals before a node is known: budgets per peer, audited in tallies.
    let refusals = Refusals::new(&config.limits, store.clone());
    workers.spawn(refusals.clone().flush_every_interval(shutdown.clone()));
    let push = HttpSource::new(intake, tokens.clone(), refusals.clone());
    let state = Arc::new(AppState {
        config,
        store: store.clone(),
        tokens,
        gateway_keys: keys,
        wake,
        push,
    });
    let app = api::router(state);
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
        while self.workers.join_next().await.is_some() {}
        if let Err(e) = self.store.close().await {
            tracing::error!(error = %e, "store did not close cleanly");
        }
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
