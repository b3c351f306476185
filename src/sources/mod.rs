//! Sources: the ways records come in (layer 4), in the manner of Vector's `sources/`.
//!
//! Whatever a source reads, it hands to the same admit-and-store path,
//! [`crate::intake::Intake`]: `admit` decodes the bytes with the sending node's
//! mappings, validates, checks the catalogue, authorises and routes each record;
//! `commit` stores the message, its deliveries and audit events in one transaction.
//! A source adds only what is its own: how bytes arrive, how their sender is known,
//! what it says back, and what it remembers (a cursor, a flag in a table).
//!
//! - [`http`]: records pushed over HTTP (`POST /v1/records`), driven by requests;
//! - [`pull`]: a node's list API read page by page with a durable cursor.
//!
//! A source that reads on its own schedule implements [`Source`]: the gateway starts
//! one task per source and stops it on shutdown. A new one (the 前置库 tables, say)
//! is a module here that implements it and is listed in `gateway::start`.

pub mod http;
pub mod pull;
pub mod tables;

use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

/// The task of a running source.
pub type SourceFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source that reads on its own schedule (a pull API, a table).
pub trait Source: Send {
    /// Read until `shutdown` fires, handing what it reads to intake. Errors are the
    /// source's own to log, count, back off from and remember; the task never ends
    /// early on one.
    fn run(self: Box<Self>, shutdown: CancellationToken) -> SourceFuture;
}
