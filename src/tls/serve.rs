//! The gateway's listener: it accepts TCP connections, speaks TLS when configured
//! (HTTP/2 or HTTP/1.1 by ALPN), and serves HTTP/1.1 with the connection limits of
//! `[limits]`:
//!
//! - the head of each request must arrive within `header_timeout` of the connection
//!   being ready for it — just opened, or idle after its last answer — so a sender
//!   that drips its headers, or holds a kept-alive connection open doing nothing, is
//!   cut (hyper's header-read timer, which also runs on idle keep-alive
//!   connections);
//! - a request head larger than `max_header_bytes` gets 431 and the connection is
//!   closed;
//! - a TLS handshake has ten seconds.
//!
//! What cut a connection is reported to `on_cut` with the peer address, so refusals
//! that never reach a handler are still counted and audited. Every request carries
//! its [`Peer`] (address and client certificate) and, as before, the client
//! certificate alone as an `Option<PeerCert>` extension.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{PeerCert, Reloading};

/// Who is at the other end of a request's connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client certificate, verified against the CA bundle (TLS only).
    pub cert: Option<PeerCert>,
}

/// Why a connection was cut before a request reached a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The request head (or the next one, on a kept-alive connection) did not arrive
    /// in time.
    HeaderTimeout,
    /// The request head was larger than `max_header_bytes` (answered 431).
    HeaderTooLarge,
    /// The TLS handshake failed or took too long.
    Handshake,
}

impl Cut {
    pub fn as_str(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::HeaderTooLarge => "header_too_large",
            Cut::Handshake => "tls_handshake",
        }
    }
}

/// The limits every connection is held to.
#[derive(Clone)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub max_header_bytes: usize,
    /// Told of each connection cut before a handler saw its request.
    pub on_cut: Option<Arc<dyn Fn(SocketAddr, Cut) + Send + Sync>>,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(15),
            max_header_bytes: 64 * 1024,
            on_cut: None,
        }
    }
}

/// Serve `app` over TLS on `listener` until `stop`, with the default limits.
pub fn serve(
    listener: TcpListener,
    app: axum::Router,
    tls: Arc<Reloading>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    serve_with(listener, app, Some(tls), ConnLimits::default(), stop)
}

/// Serve `app` on `listener` (over TLS when `tls` is given) until `stop`; in-flight
/// requests finish on stop, for up to ten seconds.
pub fn serve_with(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<Reloading>>,
    limits: ConnLimits,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = tls.as_ref().map_or(Duration::from_secs(3600), |t| {
            Duration::from_secs(t.tls.reload_seconds.max(1))
        });
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Some(t) = &tls {
                        t.reload_if_changed();
                    }
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = listener.accept() => {
                    let Ok((tcp, addr)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(connection(tcp, addr, app.clone(), tls.clone(), limits.clone(), stop.clone()));
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
    })
}

/// One connection, from handshake to close.
async fn connection(
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
    app: axum::Router,
    tls: Option<Arc<Reloading>>,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let cut = |c: Cut| {
        metrics::counter!("hallgate_connections_cut_total", "reason" => c.as_str()).increment(1);
        if let Some(f) = &limits.on_cut {
            f(addr, c);
        }
    };
    match tls {
        None => {
            let peer = Peer { addr, cert: None };
            if let Some(c) = http(TokioIo::new(tcp), peer, false, app, &limits, stop).await {
                cut(c);
            }
        }
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                        cut(Cut::Handshake);
                        return;
                    }
                    Err(_) => {
                        cut(Cut::Handshake);
                        return;
                    }
                };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| PeerCert(c.clone().into_owned()));
            // HTTP/2 when the client asked for it in the handshake (ALPN), else HTTP/1.1.
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            let peer = Peer { addr, cert };
            if let Some(c) = http(TokioIo::new(stream), peer, h2, app, &limits, stop).await {
                cut(c);
            }
        }
    }
}

/// Serve HTTP on one connection; what cut it, if a limit did.
async fn http<I>(
    io: TokioIo<I>,
    peer: Peer,
    h2: bool,
    app: axum::Router,
    limits: &ConnLimits,
    stop: CancellationToken,
) -> Option<Cut>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(peer.cert.clone());
        req.extensions_mut().insert(peer.clone());
        let app = app.clone();
        async move { tower::ServiceExt::oneshot(app, req).await }
    });
    // In-flight requests finish on stop (for up to ten seconds).
    macro_rules! run {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(Duration::from_secs(10), conn)
                        .await
                        .unwrap_or(Ok(()))
                }
            }
        }};
    }
    let result = if h2 {
        run!(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(limits.header_timeout))
                .keep_alive_timeout(limits.header_timeout)
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .serve_connection(io, service)
        )
    } else {
        run!(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(io, service)
        )
    };
    match result {
        Ok(()) => None,
        Err(e) if e.is_timeout() => Some(Cut::HeaderTimeout),
        Err(e) if e.is_parse_too_large() => Some(Cut::HeaderTooLarge),
        Err(e) => {
            tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            None
        }
    }
}
