//! `hallgate supervise` (电子监察): `report` (per department, item or region, from
//! the store, with a progress bar on a terminal; `--csv FILE` writes it for a
//! spreadsheet) and `cases` (the red and yellow lists with the working days left or
//! past). The same answers as `GET /v1/supervision/...`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use hallgate::config::Config;
use hallgate::store::supervision::{SvFilter, SvOp, SvOut};
use hallgate::store::{OpenMode, Store};
use hallgate::supervise::report::{self, By, Row};

#[derive(Subcommand)]
pub enum SuperviseCommand {
    /// Efficiency and data quality per group over the cases accepted in a range.
    Report {
        /// Cases accepted from (a date or an RFC 3339 time).
        #[arg(long)]
        from: String,
        /// …until (exclusive; a date means its start).
        #[arg(long)]
        to: String,
        /// dept, item or region.
        #[arg(long, default_value = "dept")]
        by: String,
        /// Also write the report as CSV (UTF-8 with BOM) to this file.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Open cases in a state, with the working days left (or past, negative).
    Cases {
        /// overdue, warning, suspended or on_time (repeat or comma-separate).
        #[arg(long, default_value = "overdue,warning")]
        state: String,
        /// Only this department (统一社会信用代码).
        #[arg(long)]
        dept: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

pub async fn run(cmd: SuperviseCommand, config: &Config) -> anyhow::Result<ExitCode> {
    if !config.supervision.enabled {
        anyhow::bail!("supervision is not enabled: set [supervision] enabled = true");
    }
    let cal = hallgate::supervise::calendar(config)?;
    let store = hallgate::store::open_config(config, OpenMode::Tool).await?;
    let out = match cmd {
        SuperviseCommand::Report {
            from,
            to,
            by,
            csv,
            json,
        } => report_cmd(&*store, &from, &to, &by, csv, json).await,
        SuperviseCommand::Cases { state, dept, limit } => {
            let states: Vec<String> = state.split(',').map(str::to_string).collect();
            if let Some(s) = states
                .iter()
                .find(|s| hallgate::supervise::State::parse(s).is_none())
            {
                anyhow::bail!("--state `{s}`: overdue, warning, suspended or on_time");
            }
            let SvOut::Cases(rows) = store
                .supervision(SvOp::Cases(SvFilter {
                    states,
                    dept_code: dept,
                    limit: limit.clamp(1, 100_000),
                    ..SvFilter::default()
                }))
                .await?
            else {
                anyhow::bail!("the store gave an unexpected answer");
            };
            let now = config.supervision.clock.now_ms();
            println!("case_no\tstate\titem_code\tdept\tdeadline\tdays_left");
            for r in &rows {
                let v = hallgate::supervise::view(&cal, r, now);
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.case_no,
                    v["state_label"].as_str().unwrap_or("-"),
                    r.item_code.as_deref().unwrap_or("-"),
                    r.dept_name
                        .as_deref()
                        .or(r.dept_code.as_deref())
                        .unwrap_or("-"),
                    v["deadline"].as_str().unwrap_or("-"),
                    v["days_left"]
                );
            }
            eprintln!("{} cases", rows.len());
            Ok(ExitCode::SUCCESS)
        }
    };
    store.close().await?;
    out
}

async fn report_cmd(
    store: &dyn Store,
    from: &str,
    to: &str,
    by: &str,
    csv: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let time = |t: &str, name: &str| {
        hallgate::time::parse_time(t)
            .ok_or_else(|| anyhow::anyhow!("--{name} `{t}` is not a date or RFC 3339 time"))
    };
    let (from_ms, to_ms) = (time(from, "from")?, time(to, "to")?);
    let group =
        By::parse(by).ok_or_else(|| anyhow::anyhow!("--by `{by}`: dept, item or region"))?;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} cases read ({per_sec})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let rows = report::report(store, group, from_ms, to_ms, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    if let Some(path) = &csv {
        std::fs::write(path, report::csv(&rows))
            .map_err(|e| anyhow::anyhow!("--csv {}: {e}", path.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Row]) {
    println!(
        "group\treceived\tfinished\ton_time\trate\tused_mean\tused_p90\tpromised_mean\toverdue_open\tquality"
    );
    for r in rows {
        let quality: Vec<String> = r.quality.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        println!(
            "{} {}\t{}\t{}\t{}\t{:.0}%\t{}\t{}\t{}\t{}\t{}",
            r.code,
            r.name,
            r.received,
            r.finished,
            r.finished_on_time,
            r.on_time_rate * 100.0,
            r.used_days_mean,
            r.used_days_p90,
            r.promised_days_mean,
            r.overdue_open,
            quality.join(" ")
        );
    }
}
