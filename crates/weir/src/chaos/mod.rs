//! `weir chaos`: the kill -9 crash test.
//!
//! fraud-v1 events go through the whole durable path — HTTP ingest (a
//! `weir ingest` child), the log, a checkpointed follow-mode pipeline (a
//! `weir run` child) and its transactional file sink — while the pipeline
//! process is killed with SIGKILL at random moments and restarted at once,
//! and so is `weir ingest`, while a request is in flight; the producer sends
//! a request that got no answer again with the same `Idempotency-Key`.
//! After production a `weir run --drain` commits the rest, and the sink must
//! then hold exactly the reference alerts, each once, and the log every
//! acknowledged event with the bytes posted for it and nothing else.
//!
//! Recovery time is measured from spawning the restarted process to reading
//! its `weir run: first record processed` line on standard error.
//!
//! This module parses the arguments and runs the schedule of kills;
//! [`pipeline`] writes the pipeline file, [`children`] runs the processes,
//! [`producer`] posts the events and [`checks`] verifies the outcome.

mod checks;
mod children;
mod flow;
mod pipeline;
mod producer;
mod spike;
mod workers;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use children::{detail, start_ingest, wait_exit, wait_first_record, RunChild};
use pipeline::{example_dir, pipeline_text};
use producer::produce;

/// The log stream the events go to.
const STREAM: &str = "transactions";

/// Arguments of `weir chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Workload name (fraud-v1).
    workload: String,
    /// Events to produce.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Times to kill the pipeline process (SIGKILL) and restart it while
    /// events are produced.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// Times to kill `weir ingest` (SIGKILL) while a request is in flight
    /// and restart it (default: as many as --kills); the producer sends
    /// the unanswered request again with the same Idempotency-Key.
    #[arg(long)]
    ingest_kills: Option<u32>,
    /// Most events per second the producer posts (default: production
    /// spread over about 1.5 s per kill, at least 3 s).
    #[arg(long)]
    rate: Option<u64>,
    /// Events per HTTP request.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Checkpoint interval of the pipeline, in milliseconds.
    #[arg(long, default_value_t = 200)]
    checkpoint_interval_ms: u64,
    /// Shards of `weir run` (default: the pipeline's setting).
    #[arg(long)]
    shards: Option<usize>,
    /// Seed of the kill schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Give up (killing every child) after this many seconds.
    #[arg(long, default_value_t = 600)]
    deadline_s: u64,
    /// Working directory (must be empty or absent; default: a new one
    /// under the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the working directory (log, checkpoints, sink, children's
    /// standard error) instead of removing it at the end.
    #[arg(long)]
    keep: bool,
    /// Run the pipeline split into tasks on this many `weir run` workers
    /// (this process then produces into the log itself, routing each
    /// transaction to its card's partition); each kill is of a random
    /// worker, and a new worker joins after it.
    #[arg(long)]
    workers: Option<u32>,
    /// With --workers: the number of tasks (and partitions); default
    /// twice the workers.
    #[arg(long)]
    tasks: Option<u32>,
    /// With --workers: time between kills, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    kill_every_ms: u64,
    /// With --workers: the latency objective of availability: a second
    /// counts as available when every task's committed position is
    /// within this many milliseconds of what was appended to it.
    #[arg(long, default_value_t = 1000)]
    objective_ms: u64,
    /// Instead of kills: a step to this many times --rate, absorbed by
    /// `weir scaler --backend local` starting and stopping workers (at most
    /// --workers, default --tasks; --tasks defaults to 6 here).
    #[arg(long, value_name = "FACTOR")]
    spike: Option<u32>,
    /// With --spike: seconds at --rate before the step (and after it).
    #[arg(long, default_value_t = 20)]
    spike_at_s: u64,
    /// With --spike: seconds of the high load.
    #[arg(long, default_value_t = 40)]
    spike_for_s: u64,
    /// With --spike: the scaler's --worker-capacity (events/s a worker is
    /// assumed to process until one is measured saturated).
    #[arg(long, value_name = "EV/S")]
    worker_capacity: Option<f64>,
    /// With --spike: cap each worker at this share of one CPU (0.25: a
    /// quarter), each in a cgroup of its own (root only), so that a worker
    /// has a capacity of its own as on a machine or pod of its own.
    #[arg(long, value_name = "CPUS")]
    worker_cpu: Option<f64>,
}

/// Runs the crash test.
pub fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    if args.workload != "fraud-v1" {
        bail!("unknown workload {:?} (known: fraud-v1)", args.workload);
    }
    if args.events == 0 || args.batch == 0 || args.checkpoint_interval_ms == 0 {
        bail!("--events, --batch and --checkpoint-interval-ms must be positive");
    }
    if args.rate == Some(0) {
        bail!("--rate must be positive");
    }
    let batches = args.events.div_ceil(args.batch);
    if args.workers.is_some() && args.ingest_kills.is_some() {
        bail!("--ingest-kills: with --workers this process produces into the log itself");
    }
    let all_kills = u64::from(args.kills) + u64::from(args.ingest_kills.unwrap_or(args.kills));
    if batches <= all_kills && args.workers.is_none() {
        bail!(
            "{} events in requests of {} make {batches} requests, too few for {all_kills} kills \
             of weir run and weir ingest (each restart needs fresh events): lower --batch or \
             raise --events",
            args.events,
            args.batch,
        );
    }
    let work = match &args.dir {
        Some(d) => {
            if d.exists()
                && std::fs::read_dir(d)
                    .with_context(|| format!("cannot read {}", d.display()))?
                    .next()
                    .is_some()
            {
                bail!("--dir {} is not empty", d.display());
            }
            d.clone()
        }
        None => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            std::env::temp_dir().join(format!("weir-chaos-{}-{nanos}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&work)
        .with_context(|| format!("cannot create work dir {}", work.display()))?;
    let work = work
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", work.display()))?;
    let outcome = match (args.spike, args.workers) {
        (Some(factor), _) => spike::chaos_spike(&args, &work, factor),
        (None, Some(n)) => workers::chaos_workers(&args, &work, n),
        (None, None) => chaos(&args, &work),
    };
    let passed = matches!(outcome, Ok(true));
    if args.keep || !passed {
        eprintln!("chaos: work dir kept at {}", work.display());
    } else if let Err(e) = std::fs::remove_dir_all(&work) {
        eprintln!("chaos: cannot remove work dir {}: {e}", work.display());
    }
    Ok(if outcome? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// State shared by the producer thread and the killer (main thread).
#[derive(Default)]
struct Shared {
    /// Set to make the producer give up.
    stop: AtomicBool,
    /// Why the producer failed, once it did.
    failed: Mutex<Option<String>>,
    /// Events acknowledged so far (a prefix of the workload).
    acked_events: AtomicU64,
    /// Kills done so far; the producer keeps one request back per kill to
    /// come, so every restart has fresh events to process.
    kills_done: AtomicU32,
    /// Acknowledged requests, in order.
    acks: Mutex<Vec<Ack>>,
    /// The port `weir ingest` listens on now.
    ingest_port: AtomicU16,
    /// The producer is waiting for an answer.
    in_flight: AtomicBool,
    /// The producer holds its last requests back for kills to come.
    holding: AtomicBool,
    /// Kills of `weir ingest` planned and done.
    ingest_kills: AtomicU32,
    ingest_kills_done: AtomicU32,
}

impl Shared {
    fn ingest_kills_pending(&self) -> u32 {
        self.ingest_kills
            .load(Ordering::SeqCst)
            .saturating_sub(self.ingest_kills_done.load(Ordering::SeqCst))
    }

    fn check(&self) -> anyhow::Result<()> {
        if let Some(reason) = lock(&self.failed).as_ref() {
            bail!("the producer failed: {reason}");
        }
        Ok(())
    }
}

/// One acknowledged request: events `first_event..first_event + (end -
/// start)` at log offsets `start..end`.
#[derive(Debug, Clone, Copy)]
struct Ack {
    first_event: u64,
    start: u64,
    end: u64,
}

/// Kills every child (and stops the producer) however the run ends.
struct Guard {
    shared: Arc<Shared>,
    /// Shared with the thread that kills and restarts it.
    ingest: Arc<Mutex<Option<Child>>>,
    pipeline: Option<RunChild>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(mut p) = self.pipeline.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if let Some(mut c) = lock(&self.ingest).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Returns whether the output was exact.
fn chaos(args: &ChaosArgs, work: &Path) -> anyhow::Result<bool> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.deadline_s);
    let exe = std::env::current_exe().context("cannot locate the weir executable")?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32)
    });
    let mut rng = Rng::new(seed);
    let rate = args.rate.unwrap_or_else(|| {
        let seconds = (1.5 * f64::from(args.kills) + 1.5).max(3.0);
        ((args.events as f64 / seconds).ceil() as u64).max(1)
    });
    let log_dir = work.join("log");
    let sink = work.join("out").join("alerts.jsonl");
    let pipeline_path = work.join("pipeline.toml");
    std::fs::create_dir_all(work.join("stderr"))?;
    std::fs::write(
        &pipeline_path,
        pipeline_text(
            &example_dir(),
            work,
            &log_dir,
            &sink,
            args.checkpoint_interval_ms,
        )?,
    )
    .with_context(|| format!("cannot write {}", pipeline_path.display()))?;
    weir_config::load(&pipeline_path).with_context(|| {
        format!(
            "the generated pipeline {} is invalid",
            pipeline_path.display()
        )
    })?;
    println!(
        "chaos fraud-v1: {} events in requests of {} at up to {rate} events/s, {} kills, \
         checkpoints every {} ms, seed {seed}, work dir {}",
        args.events,
        args.batch,
        args.kills,
        args.checkpoint_interval_ms,
        work.display()
    );

    let shared = Arc::new(Shared::default());
    let ingest_kills = args.ingest_kills.unwrap_or(args.kills);
    shared.ingest_kills.store(ingest_kills, Ordering::SeqCst);
    let mut guard = Guard {
        shared: shared.clone(),
        ingest: Arc::new(Mutex::new(None)),
        pipeline: None,
    };
    let (ingest, port) = start_ingest(&exe, work, &log_dir, deadline, None)?;
    *lock(&guard.ingest) = Some(ingest);
    shared.ingest_port.store(port, Ordering::SeqCst);

    let producer = {
        let shared = shared.clone();
        let (events, batch, kills) = (args.events, args.batch, args.kills);
        std::thread::Builder::new()
            .name("weir-chaos-producer".into())
            .spawn(move || {
                let r = produce(events, batch, rate, kills, &shared, deadline);
                if let Err(e) = &r {
                    *lock(&shared.failed) = Some(format!("{e:#}"));
                }
                r
            })?
    };
    let ingest_killer = {
        let (shared, ingest) = (shared.clone(), guard.ingest.clone());
        let (exe, work, log_dir) = (exe.clone(), work.to_path_buf(), log_dir.clone());
        let (events, batch) = (args.events, args.batch);
        let seed = seed ^ 0x696e_6765_7374;
        std::thread::Builder::new()
            .name("weir-chaos-ingest-killer".into())
            .spawn(move || {
                let r = kill_ingest(
                    &exe,
                    &work,
                    &log_dir,
                    &ingest,
                    &shared,
                    ingest_kills,
                    events,
                    batch,
                    seed,
                    deadline,
                );
                if let Err(e) = &r {
                    *lock(&shared.failed) = Some(format!("killing weir ingest: {e:#}"));
                }
                r
            })?
    };

    // The first run: not a recovery, but the kills start after it is up.
    let mut runs = 0u32;
    let spawn = |runs: &mut u32, drain: bool| -> anyhow::Result<(Instant, RunChild)> {
        *runs += 1;
        let log = work.join("stderr").join(format!(
            "run-{:02}{}.stderr",
            *runs,
            if drain { "-drain" } else { "" }
        ));
        let t0 = Instant::now();
        let child = RunChild::spawn(&exe, &pipeline_path, args.shards, drain, &log)?;
        Ok((t0, child))
    };
    let (t0, child) = spawn(&mut runs, false)?;
    guard.pipeline = Some(child);
    let (mut ready_at, line) = wait_first_record(
        guard.pipeline.as_mut().expect("pipeline"),
        &shared,
        deadline,
        "the first run",
    )?;
    println!(
        "start: first record processed after {} ms ({})",
        (ready_at - t0).as_millis(),
        detail(&line)
    );

    let mut recoveries: Vec<Duration> = Vec::new();
    for i in 1..=args.kills {
        // Kill i falls at a uniformly random point of the i-th K-th of the
        // production (by events acknowledged, so a slow ingest does not bunch
        // the kills), and 100-800 ms after the previous restart was up. The
        // producer holds one request back per kill to come, which bounds
        // what can be acknowledged before this kill.
        let span = args.events as f64 / f64::from(args.kills);
        let cap = args
            .events
            .saturating_sub(u64::from(args.kills - i + 1) * args.batch);
        let threshold = (((f64::from(i - 1) + rng.unit()) * span) as u64).min(cap);
        let at = ready_at + Duration::from_millis(rng.range(100, 800));
        loop {
            let now = Instant::now();
            if now >= at && shared.acked_events.load(Ordering::SeqCst) >= threshold {
                break;
            }
            shared.check()?;
            let p = guard.pipeline.as_mut().expect("pipeline");
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "weir run exited by itself ({status}) before kill {i}; its standard error ends with:\n{}",
                    p.tail()
                );
            }
            if now >= deadline {
                bail!("deadline of {} s passed before kill {i}", args.deadline_s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let acked_at_kill = shared.acked_events.load(Ordering::SeqCst);
        let mut old = guard.pipeline.take().expect("pipeline");
        old.child.kill().context("cannot kill weir run")?;
        old.child.wait()?;
        shared.kills_done.fetch_add(1, Ordering::SeqCst);
        let (t0, child) = spawn(&mut runs, false)?;
        guard.pipeline = Some(child);
        let (t1, line) = wait_first_record(
            guard.pipeline.as_mut().expect("pipeline"),
            &shared,
            deadline,
            &format!("the restart after kill {i}"),
        )?;
        let recovery = t1 - t0;
        recoveries.push(recovery);
        println!(
            "kill {i}/{}: recovered in {} ms ({}; killed with {} of {} events acknowledged)",
            args.kills,
            recovery.as_millis(),
            detail(&line),
            acked_at_kill,
            args.events
        );
        ready_at = t1;
    }

    // Production ends (it keeps the last requests back until the kills are
    // done).
    while !producer.is_finished() {
        if Instant::now() >= deadline {
            bail!(
                "deadline of {} s passed while producing ({} of {} events acknowledged)",
                args.deadline_s,
                shared.acked_events.load(Ordering::SeqCst),
                args.events
            );
        }
        let p = guard.pipeline.as_mut().expect("pipeline");
        if let Some(status) = p.child.try_wait()? {
            bail!(
                "weir run exited by itself ({status}) while events were produced; its standard error ends with:\n{}",
                p.tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let production = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    ingest_killer
        .join()
        .map_err(|_| anyhow::anyhow!("the ingest killer thread panicked"))??;
    println!(
        "production: {} events in {} requests in {:.1} s ({:.0} events/s); {} requests sent again after no answer, {} answered from the idempotency window",
        args.events,
        production.requests,
        production.elapsed.as_secs_f64(),
        args.events as f64 / production.elapsed.as_secs_f64().max(1e-9),
        production.retries,
        production.replayed,
    );

    // A last kill of the follow-mode run (not counted), then a drain.
    let mut last = guard.pipeline.take().expect("pipeline");
    last.child.kill().context("cannot kill weir run")?;
    last.child.wait()?;
    let (t0, child) = spawn(&mut runs, true)?;
    guard.pipeline = Some(child);
    let drain = guard.pipeline.as_mut().expect("pipeline");
    let status = wait_exit(&mut drain.child, deadline, "weir run --drain")?;
    let drain_time = t0.elapsed();
    if !status.success() {
        bail!(
            "weir run --drain failed ({status}); its standard error ends with:\n{}",
            drain.tail()
        );
    }
    let drain_first = drain.ready.try_recv().ok().map(|(t, l)| (t - t0, l));
    println!(
        "drain: finished in {} ms{}",
        drain_time.as_millis(),
        match &drain_first {
            Some((t, l)) => format!(" (first record after {} ms, {})", t.as_millis(), detail(l)),
            None => String::new(),
        }
    );
    guard.pipeline = None;
    if let Some(mut ingest) = lock(&guard.ingest).take() {
        let _ = ingest.kill();
        ingest.wait()?;
    }
    let acks = lock(&shared.acks).clone();
    checks::verify(
        &log_dir,
        &sink,
        &acks,
        args.events,
        recoveries,
        checks::IngestKills {
            kills: shared.ingest_kills_done.load(Ordering::SeqCst),
            retries: production.retries,
            replayed: production.replayed,
        },
    )
}

/// Kills `weir ingest` `kills` times, each at a random point of its share
/// of the production while a request is in flight — every other time once
/// the request's batch is in the log but not yet answered — and restarts it
/// on the same port.
#[allow(clippy::too_many_arguments)]
fn kill_ingest(
    exe: &Path,
    work: &Path,
    log_dir: &Path,
    ingest: &Mutex<Option<Child>>,
    shared: &Shared,
    kills: u32,
    events: u64,
    batch: u64,
    seed: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed);
    for i in 1..=kills {
        let span = events as f64 / f64::from(kills);
        let cap = events.saturating_sub(u64::from(kills - i + 1) * batch);
        let threshold = (((f64::from(i - 1) + rng.unit()) * span) as u64).min(cap);
        // Odd kills wait for a request's batch to reach the log and kill
        // before its answer (stored, not acknowledged: the retry must be
        // answered from the idempotency window); even ones fall anywhere
        // in a request.
        let after_append = i % 2 == 1;
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("deadline passed before kill {i} of weir ingest");
            }
            if shared.holding.load(Ordering::SeqCst) {
                break;
            }
            if shared.in_flight.load(Ordering::SeqCst)
                && shared.acked_events.load(Ordering::SeqCst) >= threshold
            {
                if !after_append {
                    std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
                    break;
                }
                let before = stream_bytes(log_dir);
                let mut appended = false;
                while shared.in_flight.load(Ordering::SeqCst) {
                    if stream_bytes(log_dir) > before {
                        appended = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                if appended {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let acked_at_kill = shared.acked_events.load(Ordering::SeqCst);
        let port = shared.ingest_port.load(Ordering::SeqCst);
        if let Some(mut child) = lock(ingest).take() {
            child.kill().context("cannot kill weir ingest")?;
            child.wait()?;
        }
        shared.ingest_kills_done.fetch_add(1, Ordering::SeqCst);
        let t0 = Instant::now();
        let (child, port) = start_ingest(exe, work, log_dir, deadline, Some(port))?;
        *lock(ingest) = Some(child);
        shared.ingest_port.store(port, Ordering::SeqCst);
        println!(
            "ingest kill {i}/{kills}: listening again after {} ms (killed with {acked_at_kill} of {events} events acknowledged)",
            t0.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Bytes in the segments of partition 0 of the stream.
fn stream_bytes(log_dir: &Path) -> u64 {
    std::fs::read_dir(log_dir.join(STREAM).join("0"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// xorshift64*: enough randomness for a kill schedule.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}
