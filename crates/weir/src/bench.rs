//! `weir bench` and `weir generate`: reference workloads through the
//! example pipelines, on the same engine path as `weir run`.
//!
//! Throughput mode pre-encodes the input in memory (so the source costs
//! nothing but framing), then times the engine from start to the last sink
//! flush: decoding is inside the timing. `--baseline` runs a hand-written
//! program over the same bytes on as many threads ([`crate::baseline`]).
//! Latency mode ([`latency`]) feeds events at a fixed rate and measures
//! each output record's latency from its own creation to the moment its
//! batch was written by the sink, at steady state (after a warm-up),
//! optionally with checkpoints and with a sink whose output is visible at
//! once.

mod latency;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use weir_config::{Pipeline, SinkKind};
use weir_engine::{Input, RunOptions};
use weir_workloads::fraud_v1;

/// Input encodings of the benchmarks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// JSON lines.
    Json,
    /// Length-delimited Protobuf.
    Protobuf,
}

/// Where latency mode's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkChoice {
    /// The pipeline's own sinks (its file sink is transactional under
    /// checkpoints: output becomes visible when a checkpoint commits).
    Pipeline,
    /// The alerts go to a discard sink: handed to the measurement as
    /// written, nothing staged or written to a file.
    Discard,
}

/// Arguments of `weir bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Workload name (fraud-v1).
    workload: String,
    /// Events to process (throughput mode).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Shards (default: one per core); with --baseline, its parser and
    /// scoring threads (as many of each).
    #[arg(long)]
    shards: Option<usize>,
    /// Input encoding.
    #[arg(long, default_value = "json")]
    format: Format,
    /// Latency mode: events per second to feed.
    #[arg(long)]
    rate: Option<u64>,
    /// Latency mode: seconds to feed events for.
    #[arg(long, default_value_t = 90)]
    duration: u64,
    /// Latency mode: seconds at the start whose records are left out of
    /// the latency figures (default 60, fraud-v1's window: the figures are
    /// then those of full windows that evict). Must be under --duration.
    #[arg(long, value_name = "SECONDS")]
    warmup: Option<u64>,
    /// Latency mode: take checkpoints every MS milliseconds, into a fresh
    /// store in a temporary directory removed afterwards (without it, the
    /// run takes none, whatever the pipeline file says).
    #[arg(long, value_name = "MS")]
    checkpoint_interval: Option<u64>,
    /// Latency mode: keep the pipeline's sinks, or replace the alerts'
    /// file sink by a discard sink (default: pipeline).
    #[arg(long)]
    sink: Option<SinkChoice>,
    /// Pipeline file (default: examples/fraud/pipeline.toml, or
    /// pipeline-protobuf.toml for --format protobuf).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Throughput mode: run a hand-written program for the workload
    /// instead of the engine, over the same input bytes and on as many
    /// threads (a yardstick for the engine's overhead). Its alerts go
    /// beside the pipeline's, with "-baseline" added to the file name.
    #[arg(long)]
    baseline: bool,
    /// Throughput mode: report metrics as `weir run --metrics-address`
    /// does, with a scrape every second.
    #[arg(long)]
    metrics: bool,
    /// Throughput mode: alternate runs without and with metrics, `N` of
    /// each, and report the median throughput of both and the cost.
    #[arg(long, value_name = "N")]
    metrics_overhead: Option<u32>,
}

fn example_dir() -> PathBuf {
    let local = Path::new("examples/fraud");
    if local.is_dir() {
        return local.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud")
}

fn check_workload(name: &str) -> anyhow::Result<()> {
    if name != "fraud-v1" {
        bail!("unknown workload {name:?} (known: fraud-v1)");
    }
    Ok(())
}

/// `weir generate`.
pub fn generate(workload: &str, events: u64, format: Format) -> anyhow::Result<()> {
    check_workload(workload)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut buf = Vec::with_capacity(1 << 16);
    for t in fraud_v1::events(events) {
        match format {
            Format::Json => fraud_v1::write_json(&t, &mut buf),
            Format::Protobuf => fraud_v1::write_protobuf_delimited(&t, &mut buf),
        }
        if buf.len() > 60_000 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)?;
    out.flush()?;
    Ok(())
}

/// `weir bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    check_workload(&args.workload)?;
    let path = args.pipeline.clone().unwrap_or_else(|| {
        example_dir().join(match args.format {
            Format::Json => "pipeline.toml",
            Format::Protobuf => "pipeline-protobuf.toml",
        })
    });
    let pipeline = weir_config::load(&path)?;
    let alerts_path = alerts_file(&pipeline)?;
    if args.rate.is_none() {
        for (given, flag) in [
            (args.warmup.is_some(), "--warmup"),
            (args.checkpoint_interval.is_some(), "--checkpoint-interval"),
            (args.sink.is_some(), "--sink"),
        ] {
            if given {
                bail!("{flag} applies to latency mode only (with --rate)");
            }
        }
    }
    match args.rate {
        None if args.baseline => baseline(&args, &alerts_path),
        None => match args.metrics_overhead {
            Some(rounds) => metrics_overhead(&args, &pipeline, &alerts_path, rounds),
            None => throughput(&args, &pipeline, &alerts_path),
        },
        Some(_) if args.baseline => bail!("--baseline runs in throughput mode only (no --rate)"),
        Some(rate) => latency::run(&args, pipeline, &alerts_path, rate),
    }
}

/// The path of the file sink that holds the alerts.
fn alerts_file(p: &Pipeline) -> anyhow::Result<PathBuf> {
    p.sinks
        .iter()
        .find_map(|s| match &s.kind {
            SinkKind::File { path, .. } => Some(path.clone()),
            _ => None,
        })
        .context(
            "the benchmark pipeline needs a file sink holding the alerts (JSON lines with txn_id)",
        )
}

fn encode(format: Format, events: u64) -> Vec<u8> {
    match format {
        Format::Json => fraud_v1::encode_json(events),
        Format::Protobuf => fraud_v1::encode_protobuf(events),
    }
}

/// Counts alerts and sums their txn_ids (mod 2^64) from a JSON-lines sink.
fn read_alerts(path: &Path) -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead;
    // Line by line: a 90-second latency run writes gigabytes of alerts,
    // which must not sit in this process's memory (peak RSS is measured).
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read alerts from {}", path.display()))?;
    let mut alerts = 0u64;
    let mut checksum = 0u64;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read alerts from {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        let id = v
            .get("txn_id")
            .and_then(|x| x.as_u64())
            .with_context(|| format!("{}:{}: no txn_id", path.display(), i + 1))?;
        alerts += 1;
        checksum = checksum.wrapping_add(id);
    }
    Ok((alerts, checksum))
}

/// Runs the engine over `data`, with metrics (and a scrape each second)
/// when asked.
fn timed_run(
    args: &BenchArgs,
    pipeline: &Pipeline,
    data: std::sync::Arc<Vec<u8>>,
    metrics: bool,
) -> anyhow::Result<weir_engine::RunSummary> {
    let telemetry = metrics.then(|| weir_engine::telemetry::Telemetry::new(pipeline, None));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = telemetry.clone().map(|t| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut bytes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                bytes += t.registry.render().len();
            }
            bytes
        })
    });
    let summary = weir_engine::run(
        pipeline,
        RunOptions {
            shards: args.shards,
            input: Input::Bytes(data),
            telemetry,
            ..Default::default()
        },
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(s) = scraper {
        let _ = s.join();
    }
    Ok(summary?)
}

/// `--metrics-overhead N`: runs without and with metrics, alternating,
/// with the same alerts required of both.
fn metrics_overhead(
    args: &BenchArgs,
    pipeline: &Pipeline,
    alerts_path: &Path,
    rounds: u32,
) -> anyhow::Result<()> {
    let data = std::sync::Arc::new(encode(args.format, args.events));
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut outputs = Vec::new();
    for round in 0..rounds.max(1) {
        // Alternate which goes first, so neither gains from going second.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for metrics in order {
            let s = timed_run(args, pipeline, data.clone(), metrics)?;
            let rate = s.source_records as f64 / s.elapsed.as_secs_f64();
            eprintln!(
                "round {} metrics={}: {rate:.0} events/s",
                round + 1,
                if metrics { "on" } else { "off" }
            );
            outputs.push(read_alerts(alerts_path)?);
            if metrics {
                on.push(rate)
            } else {
                off.push(rate)
            }
        }
    }
    if outputs.windows(2).any(|w| w[0] != w[1]) {
        bail!("runs with and without metrics wrote different alerts: {outputs:?}");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut off), median(&mut on));
    println!(
        "fraud-v1 events={} rounds={} metrics_off_events_per_sec={off:.0} metrics_on_events_per_sec={on:.0} cost_percent={:.1}",
        args.events,
        rounds.max(1),
        (off - on) / off * 100.0
    );
    Ok(())
}

fn throughput(args: &BenchArgs, pipeline: &Pipeline, alerts_path: &Path) -> anyhow::Result<()> {
    let data = std::sync::Arc::new(encode(args.format, args.events));
    let summary = timed_run(args, pipeline, data, args.metrics)?;
    crate::print_summary(pipeline, &summary);
    let (alerts, checksum) = read_alerts(alerts_path)?;
    let seconds = summary.elapsed.as_secs_f64();
    println!(
        "fraud-v1 events={} alerts={} checksum={} seconds={:.3} events_per_sec={:.0}",
        summary.source_records,
        alerts,
        checksum,
        seconds,
        summary.source_records as f64 / seconds
    );
    Ok(())
}

/// `--baseline`: the hand-written program (`crate::baseline`) on the same
/// pre-encoded input, closing with the same line as the engine's.
fn baseline(args: &BenchArgs, alerts_path: &Path) -> anyhow::Result<()> {
    // As many threads as the engine's shards (and workers) by default.
    let threads = args.shards.filter(|&n| n > 0).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let stem = alerts_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match alerts_path.extension() {
        Some(ext) => format!("{stem}-baseline.{}", ext.to_string_lossy()),
        None => format!("{stem}-baseline"),
    };
    let path = alerts_path.with_file_name(name);
    let data = encode(args.format, args.events);
    eprintln!("baseline: {threads} parser thread(s) and {threads} scoring thread(s)");
    let outcome = crate::baseline::run(args.format, &data, &path, threads)?;
    let (alerts, checksum) = read_alerts(&path)?;
    let seconds = outcome.elapsed.as_secs_f64();
    println!(
        "fraud-v1 baseline events={} alerts={} checksum={} seconds={:.3} events_per_sec={:.0}",
        outcome.events,
        alerts,
        checksum,
        seconds,
        outcome.events as f64 / seconds
    );
    Ok(())
}
