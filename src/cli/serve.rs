//! `hallgate serve` (the gateway), `hallgate receive` (a simulated receiving
//! platform or provincial hall) and `hallgate demo`.

use std::path::Path;
use std::process::ExitCode;

use hallgate::config::Config;
use hallgate::mapping::Disk;

use super::runtime;

/// `hallgate serve`: run until SIGTERM or Ctrl-C, then stop in order.
pub fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = super::config(config_path)?;
    runtime()?.block_on(async {
        // Listening for SIGHUP before serving: its default action would end the process.
        let mut hup = hangups();
        let running = hallgate::gateway::start(config, None).await?;
        tracing::info!(addr = %running.addr, "hallgate serving");
        sd_notify(&format!("READY=1\nSTATUS=serving on {}", running.addr));
        // SIGHUP reloads the configuration (systemd's ExecReload sends it); SIGTERM
        // or Ctrl-C stops.
        let stop = hallgate::gateway::signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(()) = hup.recv() => {
                    sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                    // The reloader logs and audits the outcome.
                    let _ = running.reload("SIGHUP").await;
                    sd_notify(&format!("READY=1\nSTATUS=serving on {}", running.addr));
                }
            }
        }
        sd_notify("STOPPING=1\nSTATUS=finishing in-flight deliveries");
        tracing::info!("shutting down: no new requests, finishing in-flight deliveries");
        running.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGHUPs as they arrive (none where there are no Unix signals).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut s) => {
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        // Several SIGHUPs during one reload make one more reload.
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reload with `hallgate reload`")
            }
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// CLOCK_MONOTONIC in microseconds, as systemd's RELOADING=1 wants it.
fn monotonic_usec() -> u128 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1_000_000.0) as u128)
}

/// Tell systemd how the service stands (`Type=notify`: ready once it listens and the
/// store is open; stopping while it finishes in-flight work). Nothing without
/// `NOTIFY_SOCKET`; a failure is logged, never fatal.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        #[cfg(target_os = "linux")]
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            return sock.send_to_addr(state.as_bytes(), &addr);
        }
        let _ = bytes;
        sock.send_to(state.as_bytes(), Path::new(&path))
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// What `hallgate receive` is asked to be.
pub struct Receive {
    pub listen: String,
    pub name: String,
    pub status: u16,
    pub hall_cases: Option<u64>,
}

/// `hallgate receive`: serve until SIGTERM or Ctrl-C.
pub fn receive(args: Receive, config_path: &Path) -> anyhow::Result<ExitCode> {
    let Receive {
        listen,
        name,
        status,
        hall_cases,
    } = args;
    runtime()?.block_on(async {
        let r = match hall_cases {
            None => hallgate::receiver::Receiver::start(&name, &listen).await?,
            Some(n) => {
                let hall = hallgate::receiver::hall::Hall::start(&name, &listen).await?;
                if let Ok(config) = Config::load(config_path)
                    && let Some(set) = hallgate::mapping::load_sets(&config, &Disk)?.remove(&name)
                {
                    hall.set_mappings(set);
                }
                hall.add_cases(
                    (1..=n)
                        .map(|i| hallgate::receiver::hall::sample_case(i, i as usize))
                        .collect(),
                );
                println!(
                    "{name}: provincial hall sync APIs at {0}/api/cases, {0}/api/holdings, {0}/api/items ({n} cases)",
                    hall.base()
                );
                hall.receiver.clone()
            }
        };
        r.limit_log(10_000);
        r.set_script(hallgate::receiver::Script {
            status,
            ..Default::default()
        });
        println!("{name} receiving at {}", r.url());
        hallgate::gateway::signal().await;
        println!("{name}: {} record(s) acknowledged", r.accepted_total());
        r.stop();
        Ok(ExitCode::SUCCESS)
    })
}

/// `hallgate demo`.
pub fn demo(data_dir: &Path, once: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        hallgate::demo::run(data_dir, once).await?;
        Ok(ExitCode::SUCCESS)
    })
}
