//! hallgate: a data-exchange gateway for government-service platforms (政务服务数据交换网关).
//!
//! The library is in layers, and a module imports only from its own layer or below
//! (docs/architecture.md; `tests/layers.rs` keeps it so):
//!
//! 1. basics: [`config`], the canonical [`record`] and its checks, [`codec`],
//!    audit [`event`]s, [`hash`]es, the national algorithms [`guomi`], [`time`], [`keys`], [`tls`], [`observe`];
//! 2. [`mapping`];
//! 3. [`store`];
//! 4. the pipeline: [`auth`], [`limits`], [`route`], [`intake`] with its
//!    [`sources`], [`delivery`] with its [`sinks`], [`sync`], and the [`audit`]
//!    tools;
//! 5. the HTTP [`api`], and the [`console`] for people (auditors, operators);
//! 6. wiring: [`gateway`], the [`demo`], the simulated peers in [`receiver`].
//!
//! A record goes sender → a source (HTTP push, pull) → intake (decode, validate,
//! authorise, route, commit) → store → delivery → a sink → destination.
#![forbid(unsafe_code)]

// 1. basics
pub mod codec;
pub mod config;
pub mod event;
pub mod guomi;
pub mod hash;
pub mod keys;
pub mod observe;
pub mod record;
pub mod time;
pub mod tls;
// 2.
pub mod mapping;
// 3.
pub mod frontdb;
pub mod store;
// 4. the pipeline
pub mod audit;
pub mod auth;
pub mod backlog;
pub mod delivery;
pub mod intake;
pub mod limits;
pub mod route;
pub mod sinks;
pub mod sources;
pub mod supervise;
pub mod sync;
// 5.
pub mod api;
pub mod console;
// 6. wiring
pub mod demo;
pub mod gateway;
pub mod receiver;
