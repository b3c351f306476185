//! The demo's 电子监察 account: one case (the national hall's sample application
//! under another case number, promised 5 working days from 1 April 2026 over 清明, with no
//! result sent) watched on a fast clock as it turns
//! yellow and then red without any new record, the alerts arriving at the
//! supervision platform in its own XML, and the efficiency report.

use std::time::{Duration, Instant};

use super::DemoError;
use crate::gateway::Running;
use crate::receiver::Receiver;
use crate::store::supervision::{SvOp, SvOut};
use crate::supervise::report::{self, By};
use crate::time::{Clock, parse_time, rfc3339};

/// The sample the watched case is made from (examples/samples/nat/application.json),
/// and its case number there…
pub const SAMPLE: &str = "nat/application.json";
pub const SAMPLE_CASE: &str = "350205260401000123";
/// …and the one the demo sends it under: a case with no result yet.
pub const CASE: &str = "350205260401000999";
/// Where the demo's clock starts: an hour after that case was accepted.
pub const START: &str = "2026-04-01T10:00:00+08:00";

/// The demo's clock, standing at [`START`] until the account moves it.
pub fn clock() -> Clock {
    Clock::manual(parse_time(START).unwrap_or(0))
}

/// Move the clock through the case's promise and print what the timer does.
pub async fn watch(
    running: &Running,
    clock: &Clock,
    supervision: &Receiver,
    config: &crate::config::Config,
) -> Result<(), DemoError> {
    println!(
        "\n— 电子监察: 办件 {CASE}, promised 5 working days from 2026-04-01, over 清明 (4–6 April); the demo's clock runs fast —"
    );
    let cal = crate::supervise::calendar(config).map_err(|e| DemoError::Send(e.to_string()))?;
    for (at, want) in [
        (START, "on_time"),
        ("2026-04-08T12:00:00+08:00", "on_time"),
        ("2026-04-09T09:00:00+08:00", "warning"),
        ("2026-04-10T09:00:00+08:00", "overdue"),
    ] {
        let now = parse_time(at).unwrap_or(0);
        clock.set(now);
        let started = Instant::now();
        let mut row = None;
        while started.elapsed() < Duration::from_secs(10) {
            if let SvOut::Case(Some(r)) = running.store.supervision(SvOp::Case(CASE.into())).await?
            {
                let done = r.state.as_deref() == Some(want);
                row = Some(r);
                if done {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(r) = row else {
            println!("  the timer has not looked at the case yet");
            return Ok(());
        };
        let v = crate::supervise::view(&cal, &r, now);
        println!(
            "  clock {}  {:<12}  deadline {}  working days left {}",
            &rfc3339(now)[..16],
            v["state_label"].as_str().unwrap_or("-"),
            v["deadline"].as_str().map_or("-", |d| &d[..16]),
            v["days_left"]
        );
    }
    let started = Instant::now();
    let alerts = |r: &Receiver| {
        r.accepted()
            .into_iter()
            .filter(|a| {
                let raw = String::from_utf8_lossy(&a.raw);
                raw.contains("<EA_JC_ALERT>") && raw.contains(CASE)
            })
            .collect::<Vec<_>>()
    };
    while alerts(supervision).len() < 2 && started.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for a in alerts(supervision) {
        let xml = String::from_utf8_lossy(&a.raw);
        let pick = |tag: &str| {
            xml.split(&format!("<{tag}>"))
                .nth(1)
                .and_then(|s| s.split(&format!("</{tag}>")).next())
                .unwrap_or("")
                .to_string()
        };
        println!(
            "  supervision platform received EA_JC_ALERT  ALERTTYPE {}  DEADLINE {}  {}",
            pick("ALERTTYPE"),
            pick("DEADLINE"),
            pick("ALERTREASON")
        );
    }
    println!(
        "\n— the efficiency report (hallgate supervise report --from 2026-01-01 --to 2027-01-01) —"
    );
    let (from, to) = (
        parse_time("2026-01-01").unwrap_or(0),
        parse_time("2027-01-01").unwrap_or(0),
    );
    let rows = report::report(running.store.as_ref(), By::Dept, from, to, |_| {})
        .await
        .map_err(|e| DemoError::Send(e.to_string()))?;
    println!("  department                      received finished on-time overdue  quality");
    for r in rows {
        let quality: Vec<String> = r.quality.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        println!(
            "  {:<30}  {:>8} {:>8} {:>7} {:>7}  {}",
            if r.name.is_empty() { &r.code } else { &r.name },
            r.received,
            r.finished,
            r.finished_on_time,
            r.overdue_open,
            quality.join(" ")
        );
    }
    Ok(())
}
