//! `weir scaler`: the control loop and the servers around it.
//!
//! One thread runs the loop (every `--interval`: supervise the backend,
//! scrape the workers, decide, export, act); a small tokio runtime serves
//! KEDA's gRPC protocol and the scaler's own `/metrics` from the latest
//! decision. Scraping is blocking (weir-metrics' client runs a runtime per
//! request), which is why the loop is a plain thread. SIGTERM or SIGINT
//! ends the loop; the backend then stops its workers (the local backend
//! SIGTERMs them and waits for them) before the scaler exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use weir_metrics::Registry;

use crate::backend::{Backend, CommandTemplate, Keda, Local};
use crate::cli::{load_token, seconds, BackendKind, ServeArgs};
use crate::decide::{Decider, Observation};
use crate::metrics::ScalerMetrics;
use crate::observe::{Observer, Series, Targets};

/// Everything `weir scaler` needs, checked.
pub struct Scaler {
    decider: Decider,
    observer: Observer,
    backend: Box<dyn Backend>,
    metrics: ScalerMetrics,
    interval: Duration,
    listen: SocketAddr,
    metrics_address: Option<SocketAddr>,
}

impl Scaler {
    /// Checks the arguments and builds the scaler (nothing started yet).
    pub fn new(args: ServeArgs, series: Series) -> anyhow::Result<Scaler> {
        if let Some(c) = args.worker_capacity {
            if !(c.is_finite() && c > 0.0) {
                anyhow::bail!("--worker-capacity {c} must be positive");
            }
        }
        let settings = args.decide.settings(args.worker_capacity)?;
        if args.interval.is_nan() || args.interval <= 0.0 {
            anyhow::bail!("--interval must be positive");
        }
        let targets = Targets {
            patterns: args.workers_metrics.clone(),
            token: load_token(args.token_file.as_deref())?,
        };
        targets.validate()?;
        if targets.patterns.is_empty() {
            tracing::warn!("scaler: no --workers-metrics: no load is observed, the count stays at --min-workers");
        }
        let metrics = ScalerMetrics::new(Arc::new(Registry::new()));
        let backend: Box<dyn Backend> = match args.backend {
            BackendKind::Keda => {
                if args.local_command.is_some() {
                    anyhow::bail!("--local-command needs --backend local");
                }
                Box::new(Keda::new(settings.min_workers))
            }
            BackendKind::Local => {
                let Some(cmd) = &args.local_command else {
                    anyhow::bail!("--backend local needs --local-command (the worker's command line, with {{worker}} for its index)");
                };
                Box::new(Local::new(
                    CommandTemplate::parse(cmd)?,
                    seconds(args.stop_grace),
                    metrics.restarts.clone(),
                ))
            }
        };
        Ok(Scaler {
            decider: Decider::new(settings),
            observer: Observer::new(targets, series),
            backend,
            metrics,
            interval: seconds(args.interval),
            listen: args.listen,
            metrics_address: args.metrics_address,
        })
    }

    /// Runs until `stop` is set, then stops the workers it started.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-scaler-rpc")
            .enable_all()
            .build()
            .context("cannot start the scaler's runtime")?;
        let min = self.decider.settings().min_workers;
        let (tx, rx) = watch::channel(min);
        let listener = runtime.block_on(crate::keda::bind(self.listen))?;
        let grpc_addr = listener.local_addr()?;
        let (quit_tx, quit_rx) = watch::channel(false);
        let grpc = {
            let mut quit = quit_rx.clone();
            runtime.spawn(crate::keda::serve(
                listener,
                crate::keda::Service::new(rx),
                async move {
                    let _ = quit.wait_for(|q| *q).await;
                },
            ))
        };
        if let Some(addr) = self.metrics_address {
            let l = runtime
                .block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("--metrics-address {addr}: cannot listen"))?;
            let mut quit = quit_rx.clone();
            let registry = self.metrics.registry.clone();
            runtime.spawn(async move {
                tokio::select! {
                    _ = crate::http::serve_metrics(l, registry) => {}
                    _ = quit.wait_for(|q| *q) => {}
                }
            });
        }
        tracing::info!(address = %grpc_addr, "scaler: serving KEDA's external scaler protocol");
        eprintln!(
            "weir scaler: KEDA external scaler on {grpc_addr}; deciding every {:.1} s",
            self.interval.as_secs_f64()
        );
        // The local backend starts its minimum at once.
        if let Err(e) = self.backend.scale_to(min) {
            tracing::error!("scaler: {e:#}");
        }
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let tick = Instant::now();
            self.step(started, &tx);
            while !stop.load(Ordering::Relaxed) && tick.elapsed() < self.interval {
                std::thread::sleep(Duration::from_millis(25).min(self.interval));
            }
        }
        eprintln!("weir scaler: stopping (workers it started get SIGTERM)");
        self.backend.shutdown();
        // Streams end when the sender goes; connections get a second to
        // close before the runtime drops them.
        drop(tx);
        let _ = quit_tx.send(true);
        let served =
            runtime.block_on(async { tokio::time::timeout(Duration::from_secs(1), grpc).await });
        runtime.shutdown_timeout(Duration::from_millis(100));
        match served {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => anyhow::bail!("gRPC server task failed: {e}"),
            Err(_) => tracing::debug!("scaler: gRPC connections still open at exit; closed"),
        }
        Ok(())
    }

    /// One tick: supervise, observe, decide, export, act.
    fn step(&mut self, started: Instant, tx: &watch::Sender<usize>) {
        self.backend.supervise();
        let current = self.backend.current();
        let load = self.observer.observe(current);
        self.metrics.scrape_errors.add(load.errors as u64);
        let d = self.decider.decide(&Observation {
            at: started.elapsed().as_secs_f64(),
            input_rate: load.input_rate,
            lag: load.lag,
            true_rate: load.true_rate,
            current_workers: current,
        });
        self.metrics.record(&d);
        let _ = tx.send(d.desired);
        if let Err(e) = self.backend.scale_to(d.desired) {
            tracing::error!("scaler: {e:#}");
        }
    }
}

/// Runs `weir scaler` until SIGTERM or SIGINT.
pub fn serve(args: ServeArgs, series: Series) -> anyhow::Result<()> {
    let scaler = Scaler::new(args, series)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install the SIGTERM and SIGINT handlers")?;
    }
    scaler.run(stop)
}
