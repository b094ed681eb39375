//! The `weir` command: run, validate and benchmark pipelines.

mod baseline;
mod bench;
mod chaos;
mod dlq;
mod http_client;
mod ingest;
mod ingest_client;
mod observe;
mod progress;
mod scaler;
mod signals;
mod tap;
mod tasks;
#[cfg(feature = "kafka")]
mod tasks_kafka;
mod top;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir_engine::{ErrorClass, RunOptions, RunSummary};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Real-time AI data pipelines: events in, features over event-time windows, models in-process, decisions out"
)]
struct Cli {
    /// Diagnostics filter: a level, or levels per module such as
    /// `warn,weir_engine=info,weir_nats=debug` (RUST_LOG takes precedence).
    #[arg(long, global = true, default_value = "warn")]
    log_level: String,
    /// Diagnostics format: `human` (one readable line per event) or `json`
    /// (one JSON object per line, for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "WEIR_LOG_FORMAT",
        default_value = "human"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file to the end of its input.
    Run {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
        /// Number of shards (default: the file's setting, else one per core).
        #[arg(long)]
        shards: Option<usize>,
        /// Stop at the end of what the source holds now, even where the
        /// pipeline says `follow = true` or reads a broker (NATS, Kafka:
        /// once caught up; MQTT: once quiet for a second); a final
        /// checkpoint commits everything.
        #[arg(long)]
        drain: bool,
        /// Serve `/metrics` (Prometheus), `/healthz`, `/readyz` and
        /// `/tap/STEP` on this address, such as `127.0.0.1:9464`.
        #[arg(long, env = "WEIR_METRICS_ADDRESS", value_name = "ADDRESS")]
        metrics_address: Option<String>,
        /// File holding the bearer token that `/metrics` and `/tap` of
        /// --metrics-address need (else WEIR_ENDPOINT_TOKEN, else none:
        /// `/metrics` open, taps off). `/healthz` and `/readyz` never need
        /// it.
        #[arg(long, value_name = "PATH")]
        endpoint_token_file: Option<PathBuf>,
        /// `/readyz` fails while the source's consumer lag (log sources)
        /// is over this many records.
        #[arg(long, env = "WEIR_MAX_LAG", value_name = "RECORDS")]
        max_lag: Option<u64>,
        /// On SIGTERM or SIGINT the run stops gracefully (final checkpoint,
        /// sinks committed, summary, exit 0); if that takes longer than
        /// this, it exits at once (a restart resumes from the last
        /// checkpoint). Keep it under Kubernetes'
        /// terminationGracePeriodSeconds (30 s by default).
        #[arg(long, env = "WEIR_STOP_TIMEOUT", value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
        stop_timeout: std::time::Duration,
        /// For a pipeline split into tasks (`settings.tasks`): run only
        /// this task. Without it, the process shares the tasks with every
        /// other `weir run` of the pipeline on this machine.
        #[arg(long)]
        task: Option<u32>,
        /// For a pipeline split into tasks: this process's member id among
        /// the pipeline's workers (default: host name and process id).
        #[arg(long)]
        member_id: Option<String>,
    },
    /// Check a pipeline file without running it.
    Validate {
        /// The pipeline file (TOML).
        pipeline: PathBuf,
    },
    /// Benchmark a reference workload through its example pipeline.
    Bench(bench::BenchArgs),
    /// Inspect and replay dead letters kept in a log stream.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Crash test: feed a reference workload through HTTP ingest, the log,
    /// a checkpointed pipeline and a transactional file sink while killing
    /// the pipeline process with SIGKILL; check the output is exact.
    Chaos(chaos::ChaosArgs),
    /// Accept events over HTTP into the durable log until interrupted.
    Ingest(ingest::IngestArgs),
    /// Write a reference workload's input events to standard output.
    Generate {
        /// Workload name (fraud-v1).
        workload: String,
        /// Number of events.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Encoding: json (lines) or protobuf (length-delimited).
        #[arg(long, default_value = "json")]
        format: bench::Format,
    },
    /// Live view of a running pipeline from its metrics endpoint
    /// (`weir run --metrics-address`): records, rates, latencies, lag,
    /// checkpoints, dead letters, connectors.
    Top(top::TopArgs),
    /// Print sampled records passing a step of a running pipeline (from
    /// its `weir run --metrics-address` endpoint) as JSON lines.
    Tap(tap::TapArgs),
    /// Autoscaler: decide the worker count from the workers' load (the
    /// larger of a reactive need from lag and true processing rate and a
    /// trend forecast) and serve it to KEDA over its external scaler gRPC
    /// protocol, or run that many local `weir run` workers; `weir scaler
    /// simulate` replays a load trace against static provisioning.
    Scaler(weir_scaler::cli::ScalerArgs),
}

/// mimalloc rather than the system allocator (see Cargo.toml): the same
/// for the engine and for `weir bench --baseline`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (filter, from) = match std::env::var("RUST_LOG") {
        Ok(f) => (f, "RUST_LOG"),
        Err(_) => (cli.log_level.clone(), "--log-level"),
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {from} {filter:?} is not a valid filter: {e}");
            return ExitCode::FAILURE;
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter);
    match cli.log_format {
        LogFormat::Human => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            let class = error_class(&e);
            eprintln!("error: {}", render_error(&e));
            if let Some(class) = class {
                eprintln!("  ({})", class_hint(class));
            }
            exit_code(class)
        }
    }
}

/// `e` and its causes on one line. Library errors print their source in
/// their own message (so a log line is whole), and anyhow's `{:#}` would
/// then say each cause twice or more; a cause the layer above already said
/// is left out.
fn render_error(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if said.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        said = text;
    }
    out
}

/// The class of the engine or configuration error behind `e`, if any.
fn error_class(e: &anyhow::Error) -> Option<ErrorClass> {
    e.chain().find_map(|cause| {
        if let Some(engine) = cause.downcast_ref::<weir_engine::EngineError>() {
            Some(engine.class())
        } else if cause.downcast_ref::<weir_config::ConfigError>().is_some() {
            Some(ErrorClass::Config)
        } else {
            None
        }
    })
}

/// What an error's class asks of the person who reads it.
fn class_hint(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Config => {
            "a configuration problem: fix the pipeline or what it points at; retrying will fail the same way"
        }
        ErrorClass::External => {
            "the outside world failed (a broker, a database, the disk): retrying later may succeed"
        }
        ErrorClass::Internal => "a bug in weir: please report it with this message and the log",
    }
}

/// Exit codes by class, from sysexits(3), so supervisors can tell a
/// failure worth retrying (75) from one that needs a person (78, 70);
/// other failures (usage, unclassified) exit 1.
fn exit_code(class: Option<ErrorClass>) -> ExitCode {
    match class {
        Some(ErrorClass::Config) => ExitCode::from(78),
        Some(ErrorClass::External) => ExitCode::from(75),
        Some(ErrorClass::Internal) => ExitCode::from(70),
        None => ExitCode::FAILURE,
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { pipeline } => Ok(validate(&pipeline)),
        Command::Run {
            pipeline,
            shards,
            drain,
            metrics_address,
            endpoint_token_file,
            max_lag,
            stop_timeout,
            task,
            member_id,
        } => {
            // First, so a signal during start-up stops the run as well.
            let stop = weir_engine::Stop::new();
            let signals = signals::watch(stop.clone(), stop_timeout, "weir run")?;
            let p = weir_config::load(&pipeline)?;
            if p.settings.tasks > 1 {
                let telemetry = metrics_address
                    .as_ref()
                    .map(|_| weir_engine::telemetry::Telemetry::new(&p, max_lag));
                let _endpoint = match (&metrics_address, &telemetry) {
                    (Some(addr), Some(t)) => Some(observe::start(
                        addr,
                        endpoint_token_file.as_deref(),
                        t.clone(),
                    )?),
                    _ => None,
                };
                let code = tasks::run(
                    p,
                    tasks::TaskArgs {
                        only: task,
                        member_id,
                        shards,
                        drain,
                        telemetry,
                        max_lag,
                    },
                    stop,
                );
                drop(signals);
                return code;
            }
            anyhow::ensure!(
                task.is_none() && member_id.is_none(),
                "--task and --member-id are for a pipeline split into tasks; {} has settings.tasks = 1",
                p.name
            );
            let telemetry = weir_engine::telemetry::Telemetry::new(&p, max_lag);
            let _endpoint = match &metrics_address {
                Some(addr) => Some(observe::start(
                    addr,
                    endpoint_token_file.as_deref(),
                    telemetry.clone(),
                )?),
                None => None,
            };
            let progress = progress::start(&telemetry, &p);
            let summary = weir_engine::run(
                &p,
                RunOptions {
                    shards,
                    drain,
                    telemetry: Some(telemetry),
                    stop: Some(stop),
                    on_first_record: Some(weir_engine::FirstRecord(std::sync::Arc::new(
                        |restored| match restored {
                            Some(id) => progress::print_line(&format!(
                                "weir run: first record processed (restored checkpoint {id})"
                            )),
                            None => progress::print_line(
                                "weir run: first record processed (no checkpoint)",
                            ),
                        },
                    ))),
                    ..Default::default()
                },
            )
            .with_context(|| format!("pipeline {} failed", p.name));
            drop(progress);
            drop(signals);
            let summary = summary?;
            print_summary(&p, &summary);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench::run(args).map(|_| ExitCode::SUCCESS),
        Command::Dlq(command) => dlq::run(command).map(|_| ExitCode::SUCCESS),
        Command::Ingest(args) => ingest::run(args).map(|_| ExitCode::SUCCESS),
        Command::Chaos(args) => chaos::run(args),
        Command::Generate {
            workload,
            events,
            format,
        } => {
            bench::generate(&workload, events, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Top(args) => top::run(args).map(|_| ExitCode::SUCCESS),
        Command::Tap(args) => tap::run(args).map(|_| ExitCode::SUCCESS),
        Command::Scaler(args) => scaler::run(args).map(|_| ExitCode::SUCCESS),
    }
}

/// A duration as the pipeline files write one (`250ms`, `30s`, `2m`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let ms = weir_config::parse_duration_ms(text)?;
    u64::try_from(ms)
        .map(std::time::Duration::from_millis)
        .map_err(|_| format!("{text:?} is negative"))
}

/// Checks a pipeline as far as can be done without running it: the file,
/// its source file, its models against their steps, the connectors built in.
fn validate(path: &Path) -> ExitCode {
    let checks = weir_config::Checks::all(&weir_engine::ops::model::OnnxShapes);
    let p = match weir_config::load_with(path, &checks) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let missing = weir_engine::connectors::missing(&p);
    if !missing.is_empty() {
        eprintln!(
            "{} needs connectors this weir was built without (built in: {}):",
            path.display(),
            connectors_built()
        );
        for (component, feature) in missing {
            eprintln!("  {component}: {feature} (cargo feature `{feature}`)");
        }
        return ExitCode::FAILURE;
    }
    println!(
        "{}: ok (pipeline {:?}: 1 source, {} steps, {} sinks)",
        path.display(),
        p.name,
        p.steps.len(),
        p.sinks.len()
    );
    ExitCode::SUCCESS
}

fn connectors_built() -> String {
    match weir_engine::connectors::BUILT {
        [] => "none".to_string(),
        built => built.join(", "),
    }
}

/// Prints the end-of-run table to standard error.
pub(crate) fn print_summary(p: &weir_config::Pipeline, s: &RunSummary) {
    let secs = s.elapsed.as_secs_f64();
    eprintln!(
        "pipeline {} finished in {:.3} s on {} shard(s)",
        p.name, secs, s.shards
    );
    if let Some(d) = s.stopped {
        eprintln!(
            "  stopped on request: source closed, last checkpoint taken and output committed {:.3} s after the signal",
            d.as_secs_f64()
        );
    }
    eprintln!("  {:<24} {:>12}", "component", "records");
    eprintln!(
        "  {:<24} {:>12}",
        format!("source {}", p.source.name),
        s.source_records
    );
    for c in &s.steps {
        eprintln!("  {:<24} {:>12}", format!("step {}", c.name), c.records);
    }
    for c in &s.sinks {
        eprintln!("  {:<24} {:>12}", format!("sink {}", c.name), c.records);
    }
    eprintln!(
        "  {:<24} {:>12}   ({})",
        "dead letters",
        s.dead_letters,
        p.dead_letter.path.display()
    );
    for c in &s.connectors {
        eprintln!(
            "  connector {}: {}, {} reconnection(s)",
            c.name,
            c.state.as_str(),
            c.reconnects
        );
    }
    if secs > 0.0 {
        eprintln!(
            "  throughput {:.0} records/s",
            s.source_records as f64 / secs
        );
    }
    if p.checkpoint.is_some() {
        let c = &s.checkpoints;
        for (id, reason) in &c.skipped {
            eprintln!("  checkpoint {id} skipped: {reason}");
        }
        match c.restored {
            Some(id) => eprintln!("  restored from checkpoint {id}"),
            None => eprintln!("  started without a checkpoint"),
        }
        if let Some(last) = &c.last {
            let age = last.completed_at.elapsed().unwrap_or_default();
            eprintln!(
                "  checkpoints {} completed; last {} took {:.1} ms, {} bytes, age {:.1} s; longest {:.1} ms",
                c.completed,
                last.id,
                last.duration.as_secs_f64() * 1e3,
                last.size_bytes,
                age.as_secs_f64(),
                c.max_duration.as_secs_f64() * 1e3
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::render_error;

    #[test]
    fn a_cause_is_said_once() {
        let io = std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "failed to fill whole buffer",
        );
        let log = weir_log::LogError::Io {
            op: "read",
            path: "/log/s/0/0.log".into(),
            source: io,
        };
        let e = anyhow::Error::new(log).context("pipeline p failed");
        assert_eq!(
            render_error(&e),
            "pipeline p failed: read /log/s/0/0.log: failed to fill whole buffer"
        );
        let plain = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(render_error(&plain), "outer: middle: inner");
    }
}
