//! The command line of `weir scaler` (the `weir` binary flattens these
//! arguments into its subcommand; the logic stays in this crate).

use std::path::PathBuf;
use std::time::Duration;

use crate::decide::Settings;
use crate::sim;

/// `weir scaler`: serve the worker count, or simulate it.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ScalerArgs {
    #[command(subcommand)]
    pub command: Option<ScalerCommand>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum ScalerCommand {
    /// Replay an input-rate trace through the autoscaler and through
    /// static provisioning for the peak; print time to absorb and cost.
    Simulate(SimulateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Serve the count to KEDA (external scaler gRPC); Kubernetes acts.
    Keda,
    /// Start and stop worker processes on this machine (--local-command).
    Local,
}

/// The decision settings, shared by serving and simulating.
#[derive(Debug, Clone, clap::Args)]
pub struct DecideArgs {
    /// Fewest workers.
    #[arg(long, default_value_t = 1)]
    pub min_workers: usize,
    /// Most workers (no more than the pipeline's tasks: a worker without a
    /// task sits idle).
    #[arg(long, default_value_t = 16)]
    pub max_workers: usize,
    /// Share of a worker's true processing rate to plan for, in (0, 1].
    #[arg(long, default_value_t = 0.8)]
    pub target_utilization: f64,
    /// Drain the backlog within this time (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_seconds)]
    pub drain_time: f64,
    /// Time from asking for a worker to it processing records: the
    /// forecast's horizon (e.g. 15s).
    #[arg(long, default_value = "15s", value_parser = parse_seconds)]
    pub startup_time: f64,
    /// Scale down only to the highest need seen over this window.
    #[arg(long, default_value = "60s", value_parser = parse_seconds)]
    pub scale_down_window: f64,
    /// Input-rate history the trend forecast is fitted on.
    #[arg(long, default_value = "60s", value_parser = parse_seconds)]
    pub forecast_window: f64,
}

impl DecideArgs {
    pub fn settings(&self, default_true_rate: Option<f64>) -> anyhow::Result<Settings> {
        let s = Settings {
            target_utilization: self.target_utilization,
            drain_time: self.drain_time,
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            scale_down_window: self.scale_down_window,
            startup_time: self.startup_time,
            forecast_window: self.forecast_window,
            default_true_rate,
        };
        s.validate().map_err(anyhow::Error::msg)?;
        Ok(s)
    }
}

/// Serving: observe, decide, act, every interval.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address of the KEDA external scaler gRPC server (plaintext: keep it
    /// on loopback, or in a cluster behind a NetworkPolicy).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,
    /// Serve the scaler's own Prometheus `/metrics` on this address.
    #[arg(long, value_name = "ADDRESS")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// A worker's `weir run --metrics-address` endpoint (host:port or
    /// http://host:port); `{worker}` stands for the worker's index and
    /// expands once per running worker. Repeatable.
    #[arg(long = "workers-metrics", value_name = "ADDRESS")]
    pub workers_metrics: Vec<String>,
    /// File holding the workers' bearer token (else WEIR_ENDPOINT_TOKEN).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// What acts on a decision.
    #[arg(long, value_enum, default_value = "keda")]
    pub backend: BackendKind,
    /// The local backend's worker command, split on spaces, `{worker}`
    /// replaced by the worker's index (e.g. "weir run p.toml
    /// --metrics-address 127.0.0.1:947{worker}").
    #[arg(long, value_name = "COMMAND")]
    pub local_command: Option<String>,
    /// The local backend's time from SIGTERM to SIGKILL when it stops a
    /// worker.
    #[arg(long, default_value = "25s", value_parser = parse_seconds)]
    pub stop_grace: f64,
    /// A worker's true processing rate (events/s) to assume until one is
    /// measured (a saturated worker measures it).
    #[arg(long, value_name = "EV/S")]
    pub worker_capacity: Option<f64>,
    /// Time between decisions.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    pub interval: f64,
    #[command(flatten)]
    pub decide: DecideArgs,
}

/// `weir scaler simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// CSV of `second,events_per_second`, one line per second from 0.
    #[arg(long, required_unless_present = "write_trace")]
    pub trace: Option<PathBuf>,
    /// Records one worker processes per second.
    #[arg(long, value_name = "EV/S", required_unless_present = "write_trace")]
    pub capacity_per_worker: Option<f64>,
    /// Price of one worker-second (any currency unit).
    #[arg(long, default_value_t = 1.0)]
    pub cost_per_worker_second: f64,
    /// Seconds between decisions (whole seconds).
    #[arg(long, default_value_t = 5)]
    pub decision_interval: u64,
    /// Write both timelines, second by second, as CSV to this file.
    #[arg(long, value_name = "PATH")]
    pub timeline: Option<PathBuf>,
    /// Instead of simulating, write the brief's spike trace (`spike`, or
    /// `step` for a one-second rise) as CSV to --trace-out.
    #[arg(long, value_name = "SHAPE", requires = "trace_out")]
    pub write_trace: Option<String>,
    /// Where --write-trace writes.
    #[arg(long, value_name = "PATH")]
    pub trace_out: Option<PathBuf>,
    #[command(flatten)]
    pub decide: DecideArgs,
}

/// A duration in seconds from `500ms`, `30s`, `2m` or a bare number of
/// seconds.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * scale),
        _ => Err(format!(
            "{text:?} is not a duration (e.g. 500ms, 30s, 2m, or seconds)"
        )),
    }
}

/// Runs `weir scaler simulate`.
pub fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if let Some(shape) = &args.write_trace {
        let (trace, what) = match shape.as_str() {
            "spike" => (sim::spike_trace(false), sim::SPIKE_DOC),
            "step" => (sim::spike_trace(true), sim::STEP_DOC),
            other => anyhow::bail!("--write-trace {other:?}: expected spike or step"),
        };
        let out = args.trace_out.as_ref().expect("clap requires --trace-out");
        std::fs::write(out, sim::trace_csv(&trace, what))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
        return Ok(());
    }
    let capacity = args
        .capacity_per_worker
        .expect("clap requires --capacity-per-worker");
    if !(capacity.is_finite() && capacity > 0.0) {
        anyhow::bail!("--capacity-per-worker {capacity} must be positive");
    }
    if !(args.cost_per_worker_second.is_finite() && args.cost_per_worker_second >= 0.0) {
        anyhow::bail!(
            "--cost-per-worker-second {} must be zero or positive",
            args.cost_per_worker_second
        );
    }
    if args.decision_interval == 0 {
        anyhow::bail!("--decision-interval must be at least 1 (second)");
    }
    let path = args.trace.as_ref().expect("clap requires --trace");
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the trace {}: {e}", path.display()))?;
    let trace = sim::parse_trace(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let settings = args.decide.settings(None)?;
    let params = sim::Params {
        capacity,
        cost_per_worker_second: args.cost_per_worker_second,
        interval: args.decision_interval,
    };
    let c = sim::compare(&trace, &params, &settings);
    print!("{}", c.report(&params, &settings));
    if let Some(out) = &args.timeline {
        std::fs::write(out, sim::timeline_csv(&c))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    Ok(())
}

/// The workers' bearer token: the file's, else WEIR_ENDPOINT_TOKEN's.
pub fn load_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let token = match file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", p.display()))?,
        ),
        None => std::env::var("WEIR_ENDPOINT_TOKEN").ok(),
    };
    Ok(token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// The interval as a [`Duration`].
pub fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn durations() {
        assert_eq!(parse_seconds("500ms"), Ok(0.5));
        assert_eq!(parse_seconds("30s"), Ok(30.0));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        assert_eq!(parse_seconds("7.5"), Ok(7.5));
        assert!(parse_seconds("-1s").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
