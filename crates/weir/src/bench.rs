//! `weir bench` and `weir generate`: reference workloads through the
//! example pipelines, on the same engine path as `weir run`.
//!
//! Throughput mode pre-encodes the input in memory (so the source costs
//! nothing but framing), then times the engine from start to the last sink
//! flush: decoding is inside the timing. Latency mode feeds events at a
//! fixed rate, each stamped with its creation time, and measures creation
//! to sink write per output record (the oldest creation time of a
//! micro-batch stands for all of its records, so figures are upper bounds).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use weir_config::{Pipeline, SinkKind};
use weir_engine::{Arrival, Input, RunOptions};
use weir_workloads::fraud_v1;

/// Input encodings of the benchmarks.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// JSON lines.
    Json,
    /// Length-delimited Protobuf.
    Protobuf,
}

/// Arguments of `weir bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Workload name (fraud-v1).
    workload: String,
    /// Events to process (throughput mode).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Shards (default: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Input encoding.
    #[arg(long, default_value = "json")]
    format: Format,
    /// Latency mode: events per second to feed.
    #[arg(long)]
    rate: Option<u64>,
    /// Latency mode: seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Pipeline file (default: examples/fraud/pipeline.toml, or
    /// pipeline-protobuf.toml for --format protobuf).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Throughput mode: run a hand-written single-threaded program for the
    /// workload instead of the engine, over the same input bytes (a
    /// yardstick for the engine's overhead). Its alerts go beside the
    /// pipeline's, with "-baseline" added to the file name.
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
    match args.rate {
        None if args.baseline => baseline(&args, &alerts_path),
        None => match args.metrics_overhead {
            Some(rounds) => metrics_overhead(&args, &pipeline, &alerts_path, rounds),
            None => throughput(&args, &pipeline, &alerts_path),
        },
        Some(_) if args.baseline => bail!("--baseline runs in throughput mode only (no --rate)"),
        Some(rate) => latency(&args, &pipeline, &alerts_path, rate),
    }
}

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
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read alerts from {}", path.display()))?;
    let mut alerts = 0u64;
    let mut checksum = 0u64;
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
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
    if args.shards.is_some() {
        bail!("--baseline is single-threaded; --shards does not apply");
    }
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
    let outcome = crate::baseline::run(args.format, &data, &path)?;
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

fn latency(
    args: &BenchArgs,
    pipeline: &Pipeline,
    alerts_path: &Path,
    rate: u64,
) -> anyhow::Result<()> {
    if rate == 0 || args.duration == 0 {
        bail!("--rate and --duration must be positive");
    }
    let total = rate * args.duration;
    let (tx, rx) = crossbeam_channel::unbounded::<Arrival>();
    let format = args.format;
    let feeder = std::thread::Builder::new()
        .name("weir-bench-feeder".into())
        .spawn(move || {
            let mut generator = fraud_v1::Generator::new();
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < total {
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
                while sent < due {
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                    let t = generator.next_event(sent, now_ms);
                    let mut bytes = Vec::with_capacity(128);
                    match format {
                        Format::Json => fraud_v1::write_json(&t, &mut bytes),
                        Format::Protobuf => fraud_v1::write_protobuf_delimited(&t, &mut bytes),
                    }
                    if tx
                        .send(Arrival {
                            bytes,
                            records: 1,
                            created: Instant::now(),
                        })
                        .is_err()
                    {
                        return sent;
                    }
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            sent
        })?;
    let summary = weir_engine::run(
        pipeline,
        RunOptions {
            shards: args.shards,
            input: Input::Stream(rx),
            ..Default::default()
        },
    )?;
    let sent = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("feeder thread panicked"))?;
    crate::print_summary(pipeline, &summary);
    let (alerts, checksum) = read_alerts(alerts_path)?;
    let h = summary
        .latency_us
        .context("no record reached the sink, so no latency was measured")?;
    println!(
        "fraud-v1 mode=latency rate={} events={} alerts={} checksum={} samples={} p50_us={} p99_us={} p999_us={} max_us={}",
        rate,
        sent,
        alerts,
        checksum,
        h.len(),
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    Ok(())
}
