//! `hallgate map` (decode native messages into canonical records, or render them
//! back) and `hallgate check` (the configuration, every mapping and its examples).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use hallgate::mapping::{Disk, Mapping, MappingSet, tool};

/// The arguments of `hallgate map`.
#[derive(Args)]
pub struct MapArgs {
    /// A mapping file; give it again for several (the parts of a whole-case
    /// package). Without it, `--node` uses that node's mappings from the
    /// configuration (forms, SOAP, several kinds per body).
    #[arg(long, conflicts_with = "node", required_unless_present = "node")]
    mapping: Vec<PathBuf>,
    /// A node of the configuration.
    #[arg(long)]
    node: Option<String>,
    /// Content type of the inputs (default: from the file extension, else sniffed).
    #[arg(long)]
    content_type: Option<String>,
    /// Only mappings of this kind (as posting to /v1/records/KIND).
    #[arg(long)]
    kind: Option<String>,
    /// Render canonical JSON lines back to the native format instead.
    #[arg(long)]
    render: bool,
    /// Threads for a large input (XML records or JSON lines, cut at record
    /// boundaries; output order is kept). Default: the machine's cores.
    #[arg(long)]
    jobs: Option<usize>,
    /// Files to read (`-` for stdin).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// `hallgate map`.
pub fn map(args: MapArgs, config_path: &Path) -> anyhow::Result<ExitCode> {
    let MapArgs {
        mapping,
        node,
        content_type,
        kind,
        render,
        jobs,
        inputs,
    } = args;
    let kind = match kind.as_deref() {
        None => None,
        Some(k) => Some(
            hallgate::record::Kind::parse(k)
                .with_context(|| format!("--kind {k}: not a record kind"))?,
        ),
    };
    let (set, limits, source) = match (mapping.is_empty(), node) {
        (false, _) => {
            let mut set = Vec::new();
            for file in &mapping {
                set.push(Arc::new(Mapping::load(file, &Disk)?));
            }
            let limits = hallgate::mapping::Limits {
                max_body_bytes: 1 << 30,
                max_records: usize::MAX,
                max_elements: usize::MAX,
                ..hallgate::mapping::Limits::default()
            };
            (MappingSet::new(set), limits, None)
        }
        (true, Some(node)) => {
            // The mappings only: the files the config names for other purposes (keys,
            // certificates) need not exist where mappings are tried out.
            let config = hallgate::config::Config::load(config_path)?;
            let mut sets = hallgate::mapping::load_sets(&config, &Disk)?;
            let set = sets.remove(&node).with_context(|| {
                format!("node `{node}` has no mappings in {}", config_path.display())
            })?;
            (
                set,
                hallgate::mapping::Limits::of(&config.limits),
                Some(node),
            )
        }
        (true, None) => anyhow::bail!("give --mapping FILE or --node ID"),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut err = std::io::stderr().lock();
    let code = if render {
        tool::render(&set, &inputs, &mut out, &mut err)
    } else {
        let req = tool::MapRequest {
            inputs: &inputs,
            content_type: content_type.as_deref(),
            kind,
            source: source.as_deref(),
            limits: &limits,
            jobs: jobs
                .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
                .unwrap_or(1)
                .max(1),
        };
        tool::map(&set, &req, &mut out, &mut err)
    };
    Ok(ExitCode::from(code))
}

/// `hallgate check`.
pub fn check(config_path: &Path, mapping_files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if !mapping_files.is_empty() {
        // Each file on its own, except the parts of one package, which read their
        // examples together.
        let mut sets: Vec<(String, MappingSet)> = Vec::new();
        for f in mapping_files {
            let m = match Mapping::load(f, &Disk) {
                Ok(m) => Arc::new(m),
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let together = m.package().and_then(|p| {
                sets.iter_mut().find(|(_, s)| {
                    s.mappings.first().and_then(|x| x.package()) == Some(p)
                        && s.mappings[0].format == m.format
                })
            });
            match together {
                Some((_, s)) => s.mappings.push(m),
                None => sets.push((f.display().to_string(), MappingSet::new(vec![m]))),
            }
        }
        let refs: Vec<(String, &MappingSet)> = sets.iter().map(|(n, s)| (n.clone(), s)).collect();
        let ok = tool::run_examples(
            &refs,
            &hallgate::mapping::Limits::default(),
            &Disk,
            &mut out,
        );
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let config = match hallgate::gateway::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let sets = match hallgate::mapping::load_sets(&config, &Disk) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let refs: Vec<(String, &MappingSet)> = sets.iter().map(|(n, s)| (n.clone(), s)).collect();
    let ok = tool::run_examples(
        &refs,
        &hallgate::mapping::Limits::of(&config.limits),
        &Disk,
        &mut out,
    );
    let mappings: usize = sets.values().map(|s| s.mappings.len()).sum();
    // A calendar that ends before the deadlines it will be asked for is said loudly.
    if config.supervision.enabled
        && let Ok(cal) = hallgate::supervise::calendar(&config)
        && let Some(w) = hallgate::supervise::calendar_warning(&cal, hallgate::time::now_ms())
    {
        eprintln!("warning: {w}");
    }
    if ok {
        println!(
            "{}: ok ({} nodes, {} routes, {} mappings)",
            config_path.display(),
            config.nodes.len(),
            config.routes.len(),
            mappings
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{}: mapping examples failed (see above)",
            config_path.display()
        );
        Ok(ExitCode::FAILURE)
    }
}
