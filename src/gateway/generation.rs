//! One generation of the gateway: everything built from one [`Config`] (mappings,
//! token keys, sinks, intake, the pull sources, the HTTP routes) and the tasks that
//! run on it (delivery workers, back-pressure, pulls, catalogue refresh). A
//! generation is built whole before it serves, so that a reload swaps all of it or
//! none; the one before it is then retired: its tasks are cancelled and finish what
//! they hold (deliveries in flight complete or are given back), while requests that
//! started on it finish on it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::GatewayError;
use crate::api::{self, AppState, admin::Reloads};
use crate::auth::outbound::GatewayKeys;
use crate::auth::refusals::Refusals;
use crate::auth::token::Verifier;
use crate::config::Config;
use crate::delivery::{self, Wake};
use crate::intake::Intake;
use crate::mapping::MappingSet;
use crate::sinks::{self, Sink};
use crate::sources::Source;
use crate::sources::http::HttpSource;
use crate::store::Store;
use crate::sync::Catalogue;

/// What lives as long as the process, across generations.
pub(super) struct Shared {
    pub store: Arc<dyn Store>,
    pub refusals: Arc<Refusals>,
    pub catalogue: Catalogue,
    /// Cancelled on shutdown; every generation's token is a child of it.
    pub root: CancellationToken,
    /// The routes requests are answered by now: each request takes the current ones
    /// when it starts and keeps them to its end.
    pub routes: Arc<RwLock<Router>>,
    pub reloads: Option<Reloads>,
}

/// A generation built and checked, not yet serving.
pub(super) struct Built {
    pub config: Arc<Config>,
    router: Router,
    sinks: BTreeMap<String, Arc<dyn Sink>>,
    wake: Wake,
    intake: Arc<Intake>,
    pullers: Vec<Box<dyn Source>>,
    tables: Vec<crate::sources::tables::TableReader>,
    refusals: Vec<crate::sinks::tables::TableSink>,
    catalogue_api: Option<crate::sync::Api>,
    supervisor: Option<crate::supervise::Supervisor>,
}

/// A generation serving, with its tasks.
pub(super) struct Live {
    pub config: Arc<Config>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

/// Build everything a configuration describes; nothing runs yet, so a failure
/// leaves nothing behind.
pub(super) fn build(
    config: Config,
    mappings: BTreeMap<String, MappingSet>,
    shared: &Shared,
) -> Result<Built, GatewayError> {
    let mappings = Arc::new(mappings);
    let keys = Arc::new(GatewayKeys::load(&config).map_err(|e| GatewayError::Auth(e.to_string()))?);
    let sinks = sinks::build(&config, &mappings, &keys, &shared.store)?;
    let tokens = Arc::new(Verifier::new(&config).map_err(|e| GatewayError::Auth(e.to_string()))?);
    let wake = Wake::new(&config);
    let config = Arc::new(config);
    // Intake: the one admit-and-store path of every source.
    let mut intake = Intake::new(
        config.clone(),
        shared.store.clone(),
        mappings,
        shared.catalogue.clone(),
        wake.clone(),
    );
    // 电子监察: the timer over the cases' deadlines, when enabled; intake settles the
    // cases it opens by the same calendar and rules.
    let supervisor = if config.supervision.enabled {
        let mut s = crate::supervise::Supervisor::new(
            &config,
            shared.store.clone(),
            Arc::new(intake.router.clone()),
        )?;
        s.wake = Some(wake.clone());
        intake.supervision = Some(s.at_intake());
        Some(s)
    } else {
        None
    };
    let intake = Arc::new(intake);
    // Sources that read on their own schedule, and the catalogue they are checked by.
    let pullers = crate::sources::pull::pullers(&intake, &keys)?;
    let tables = crate::sources::tables::readers(&intake)?;
    let refusals = crate::sinks::tables::refusal_watchers(&config).map_err(|e| {
        crate::sinks::SinkError::Tables {
            destination: "tables".into(),
            reason: e.to_string(),
        }
    })?;
    let catalogue_api = match &config.catalogue {
        Some(c) => Some(crate::sync::Api::new(&config, &c.source, &keys)?),
        None => None,
    };
    let push = HttpSource::new(intake.clone(), tokens.clone(), shared.refusals.clone());
    let state = Arc::new(AppState {
        config: config.clone(),
        store: shared.store.clone(),
        tokens,
        gateway_keys: keys,
        wake: wake.clone(),
        push,
        reload: shared.reloads.clone(),
    });
    Ok(Built {
        config,
        // The API, and the console for people where it is enabled.
        router: api::router(state.clone()).merge(crate::console::router(state)),
        sinks,
        wake,
        intake,
        pullers,
        tables,
        refusals,
        catalogue_api,
        supervisor,
    })
}

impl Built {
    /// Start the generation's tasks and answer requests with its routes.
    pub(super) async fn serve(self, shared: &Shared) -> Result<Live, GatewayError> {
        let cancel = shared.root.child_token();
        let mut tasks = JoinSet::new();
        // The one step that can fail goes first, before any worker leases anything.
        if let Some(api) = self.catalogue_api
            && let Err(e) = crate::sync::spawn_refresh(
                self.config.clone(),
                shared.store.clone(),
                shared.catalogue.clone(),
                api,
                &mut tasks,
                cancel.clone(),
            )
        {
            cancel.cancel();
            return Err(e.into());
        }
        // A 前置库 whose tables or columns are not what the config names refuses the
        // start (naming them); one that cannot be reached is read once it can.
        let mut tables = Vec::with_capacity(self.tables.len());
        for mut reader in self.tables {
            match reader.prepare().await {
                Ok(_) => {}
                Err(e @ crate::sources::tables::TableError::Shape { .. }) => {
                    cancel.cancel();
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::warn!(node = %reader.node(), error = %crate::record::mask_text(&e.to_string()), "前置库 not reachable at start; retrying in the background");
                }
            }
            tables.push(reader);
        }
        for sink in &self.refusals {
            match sink.targets().await {
                Ok(_) => {}
                Err(e @ crate::frontdb::FrontDbError::Rejected(_)) => {
                    cancel.cancel();
                    return Err(crate::sinks::SinkError::Tables {
                        destination: sink.node().to_string(),
                        reason: e.to_string(),
                    }
                    .into());
                }
                Err(e) => {
                    tracing::warn!(node = %sink.node(), error = %crate::record::mask_text(&e.to_string()), "前置库 not reachable at start; writing once it is");
                }
            }
        }
        // A destination paused before a restart or reload stays paused.
        let paused = shared.store.paused_destinations().await?;
        let workers = delivery::spawn_workers(
            &self.config,
            &self.sinks,
            shared.store.clone(),
            self.wake.clone(),
            cancel.clone(),
            &paused,
        );
        tasks.spawn(async move {
            let mut workers = workers;
            while workers.join_next().await.is_some() {}
        });
        // Back-pressure: which bounded destinations are full, measured in the store.
        tasks.spawn(
            self.intake
                .backlog
                .clone()
                .watch(shared.store.clone(), cancel.clone()),
        );
        for source in self.pullers {
            tasks.spawn(source.run(cancel.clone()));
        }
        for reader in tables {
            tasks.spawn(reader.run(cancel.clone()));
        }
        for sink in self.refusals {
            tasks.spawn(crate::sinks::tables::watch_refusals(
                sink,
                shared.store.clone(),
                cancel.clone(),
            ));
        }
        if let Some(s) = self.supervisor {
            tasks.spawn(s.run(cancel.clone()));
        }
        crate::observe::zero(
            self.config
                .nodes
                .iter()
                .filter(|(_, n)| n.get_ref().accept.is_some())
                .map(|(id, _)| id.as_str()),
            self.config
                .destinations()
                .map(|(id, _)| id.to_string())
                .chain(
                    self.config
                        .receipt_destinations()
                        .into_iter()
                        .map(|(id, _)| id),
                )
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        match shared.routes.write() {
            Ok(mut r) => *r = self.router,
            Err(poisoned) => *poisoned.into_inner() = self.router,
        }
        Ok(Live {
            config: self.config,
            cancel,
            tasks,
        })
    }
}

impl Live {
    /// Stop this generation's tasks; the returned future ends when they have
    /// finished what they hold.
    pub(super) fn retire(self) -> impl Future<Output = ()> + Send + 'static {
        self.cancel.cancel();
        let mut tasks = self.tasks;
        async move { while tasks.join_next().await.is_some() {} }
    }
}

/// The routes of whichever generation serves when a request arrives.
pub(super) fn swapping(routes: Arc<RwLock<Router>>) -> Router {
    use tower::ServiceExt;
    Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
        let now = match routes.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        now.oneshot(req)
    }))
}
