//! `weir chaos`: the kill -9 crash test.
//!
//! fraud-v1 events go through the whole durable path — HTTP ingest (a
//! `weir ingest` child), the log, a checkpointed follow-mode pipeline (a
//! `weir run` child) and its transactional file sink — while the pipeline
//! process is killed with SIGKILL at random moments and restarted at once.
//! After production a `weir run --drain` commits the rest, and the sink must
//! then hold exactly the reference alerts, each once, and the log every
//! acknowledged event with the bytes posted for it.
//!
//! Recovery time is measured from spawning the restarted process to reading
//! its `weir run: first record processed` line on standard error.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use weir_workloads::fraud_v1;

/// The log stream the events go to.
const STREAM: &str = "transactions";
/// The line `weir run` prints to standard error once it processed a record.
const FIRST_RECORD: &str = "weir run: first record processed";
/// Lines of a child's standard error kept for error messages.
const TAIL_LINES: usize = 40;

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
    if batches <= u64::from(args.kills) {
        bail!(
            "{} events in requests of {} make {batches} requests, too few for {} kills \
             (each restart needs fresh events): lower --batch or raise --events",
            args.events,
            args.batch,
            args.kills
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
    let outcome = chaos(&args, &work);
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

// ---------------------------------------------------------------------------
// The run

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
}

impl Shared {
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
    ingest: Option<Child>,
    pipeline: Option<RunChild>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(mut p) = self.pipeline.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if let Some(mut c) = self.ingest.take() {
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
    let mut guard = Guard {
        shared: shared.clone(),
        ingest: None,
        pipeline: None,
    };
    let (ingest, port) = start_ingest(&exe, work, &log_dir, deadline)?;
    guard.ingest = Some(ingest);

    let producer = {
        let shared = shared.clone();
        let (events, batch, kills) = (args.events, args.batch, args.kills);
        std::thread::Builder::new()
            .name("weir-chaos-producer".into())
            .spawn(move || {
                let r = produce(port, events, batch, rate, kills, &shared, deadline);
                if let Err(e) = &r {
                    *lock(&shared.failed) = Some(format!("{e:#}"));
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
    println!(
        "production: {} events in {} requests in {:.1} s ({:.0} events/s)",
        args.events,
        production.requests,
        production.elapsed.as_secs_f64(),
        args.events as f64 / production.elapsed.as_secs_f64().max(1e-9)
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
    if let Some(mut ingest) = guard.ingest.take() {
        let _ = ingest.kill();
        ingest.wait()?;
    }

    // Verification.
    let acks = lock(&shared.acks).clone();
    let log_check = verify_log(&log_dir, &acks, args.events)?;
    let sink_check = verify_sink(&sink, args.events)?;
    recoveries.sort_unstable();
    let p50 = percentile(&recoveries, 0.5);
    let max = recoveries.last().copied().unwrap_or_default();
    let lost = sink_check.missing + log_check.lost;
    let exact = lost == 0
        && sink_check.duplicated == 0
        && sink_check.unexpected == 0
        && sink_check.mismatched == 0
        && sink_check.bad_lines == 0
        && sink_check.duplicate_ids == 0
        && log_check.extra == 0
        && sink_check.alerts == sink_check.reference_alerts
        && sink_check.checksum == sink_check.reference_checksum;
    if !exact {
        println!(
            "chaos differences: reference alerts={} checksum={}; missing_alerts={} \
             acknowledged_events_lost={} duplicated={} unexpected={} mismatched={} \
             bad_lines={} duplicate_ids={} unacknowledged_log_records={}",
            sink_check.reference_alerts,
            sink_check.reference_checksum,
            sink_check.missing,
            log_check.lost,
            sink_check.duplicated,
            sink_check.unexpected,
            sink_check.mismatched,
            sink_check.bad_lines,
            sink_check.duplicate_ids,
            log_check.extra
        );
        for note in log_check.notes.iter().chain(&sink_check.notes) {
            println!("  {note}");
        }
    }
    if sink_check.missing_ids > 0 {
        println!(
            "note: {} sink lines have no \"_id\" field",
            sink_check.missing_ids
        );
    }
    println!(
        "chaos fraud-v1 events={} kills={} alerts={} checksum={} lost={} duplicated={} recovery_p50_ms={} recovery_max_ms={}",
        args.events,
        recoveries.len(),
        sink_check.alerts,
        sink_check.checksum,
        lost,
        sink_check.duplicated,
        p50.as_millis(),
        max.as_millis()
    );
    Ok(exact)
}

/// `weir run: first record processed (restored checkpoint 12)` → `restored
/// checkpoint 12`.
fn detail(line: &str) -> &str {
    let rest = line[FIRST_RECORD.len()..].trim();
    rest.strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(rest)
}

/// Nearest-rank percentile of sorted values (zero when there are none).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
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

// ---------------------------------------------------------------------------
// The pipeline file

fn example_dir() -> PathBuf {
    let local = Path::new("examples/fraud");
    if local.is_dir() {
        return local.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud")
}

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> anyhow::Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))?;
    Ok(serde_json::to_string(s)?)
}

/// The example fraud-v1 pipeline with its header and steps verbatim (the
/// model path made absolute), reading the log stream in follow mode,
/// checkpointed, writing the alerts and dead letters into `work`.
fn pipeline_text(
    example: &Path,
    work: &Path,
    log_dir: &Path,
    sink: &Path,
    interval_ms: u64,
) -> anyhow::Result<String> {
    let file = example.join("pipeline.toml");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the example pipeline {}", file.display()))?;
    let example = example
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", example.display()))?;
    let find = |what: &str| {
        text.find(&format!("\n{what}\n"))
            .map(|i| i + 1)
            .with_context(|| format!("{} has no {what} section", file.display()))
    };
    let sources = find("[[sources]]")?;
    let steps = find("[[steps]]")?;
    let sinks = find("[[sinks]]")?;
    if !(sources < steps && steps < sinks) {
        bail!(
            "{}: expected the sections in the order sources, steps, sinks",
            file.display()
        );
    }
    let mut out = String::new();
    out.push_str("# Written by `weir chaos`: the fraud-v1 example reading a log stream.\n");
    // The header (name, settings) without the example's comments, which
    // describe the file-based example.
    for line in text[..sources].lines() {
        if !line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "[checkpoint]\ndir = {}\ninterval = \"{interval_ms}ms\"\nkeep = 3\n\n",
        toml_path(&work.join("checkpoints"))?
    ));
    out.push_str(&format!(
        "[[sources]]\nname = \"transactions\"\ntype = \"log\"\npath = {}\nstream = \"{STREAM}\"\nfollow = true\n\n",
        toml_path(log_dir)?
    ));
    for line in text[steps..sinks].lines() {
        let relative = line
            .trim_start()
            .strip_prefix("path")
            .and_then(|r| r.trim_start().strip_prefix('='))
            .map(str::trim)
            .and_then(|v| v.strip_prefix('"'))
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !Path::new(v).is_absolute());
        match relative {
            Some(p) => {
                let abs = example.join(p);
                out.push_str(&format!("path = {}\n", toml_path(&abs)?));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(&format!(
        "[[sinks]]\nname = \"alerts\"\ntype = \"file\"\ninput = \"over_threshold\"\npath = {}\n\
         columns = [\"txn_id\", \"card_id\", \"score\"]\n\n[dead_letter]\npath = {}\n",
        toml_path(sink)?,
        toml_path(&work.join("out").join("dead_letter.jsonl"))?
    ));
    Ok(out)
}

// ---------------------------------------------------------------------------
// Children

/// A `weir run` child whose standard error a thread reads (so it never
/// blocks on a full pipe) into a file, a tail and the first-record signal.
struct RunChild {
    child: Child,
    ready: mpsc::Receiver<(Instant, String)>,
    tail: Arc<Mutex<VecDeque<String>>>,
    _reader: JoinHandle<()>,
}

impl RunChild {
    fn spawn(
        exe: &Path,
        pipeline: &Path,
        shards: Option<usize>,
        drain: bool,
        log: &Path,
    ) -> anyhow::Result<RunChild> {
        let mut cmd = Command::new(exe);
        cmd.arg("run").arg(pipeline);
        if let Some(s) = shards {
            cmd.arg("--shards").arg(s.to_string());
        }
        if drain {
            cmd.arg("--drain");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start weir run")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, ready) = mpsc::channel();
        let reader = {
            let tail = tail.clone();
            std::thread::Builder::new()
                .name("weir-chaos-stderr".into())
                .spawn(move || read_stderr(stderr, file, &tail, &tx))?
        };
        Ok(RunChild {
            child,
            ready,
            tail,
            _reader: reader,
        })
    }

    fn tail(&self) -> String {
        let mut s = String::new();
        for l in lock(&self.tail).iter() {
            s.push_str("  | ");
            s.push_str(l);
            s.push('\n');
        }
        if s.is_empty() {
            s.push_str("  (nothing)\n");
        }
        s
    }
}

fn read_stderr(
    stderr: std::process::ChildStderr,
    mut file: File,
    tail: &Mutex<VecDeque<String>>,
    ready: &mpsc::Sender<(Instant, String)>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut signalled = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let now = Instant::now();
        let _ = file.write_all(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !signalled && text.starts_with(FIRST_RECORD) {
            signalled = true;
            let _ = ready.send((now, text.clone()));
        }
        let mut t = lock(tail);
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(text);
    }
}

/// Waits for the run's first-record line; fails if it exits first, the
/// producer fails or the deadline passes.
fn wait_first_record(
    run: &mut RunChild,
    shared: &Shared,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<(Instant, String)> {
    loop {
        match run.ready.recv_timeout(Duration::from_millis(20)) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Standard error closed without the line: the process ended.
                let status = wait_exit(&mut run.child, deadline, what)?;
                bail!(
                    "{what}: weir run exited ({status}) before processing a record; its standard error ends with:\n{}",
                    run.tail()
                );
            }
        }
        shared.check()?;
        if Instant::now() >= deadline {
            bail!("{what}: deadline passed before weir run processed a record");
        }
    }
}

/// Waits for a child to exit, killing it at the deadline.
fn wait_exit(child: &mut Child, deadline: Instant, what: &str) -> anyhow::Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: deadline passed before it exited");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `weir ingest` on a free port; retries on other ports when it
/// fails to start (another process may take a released port).
fn start_ingest(
    exe: &Path,
    work: &Path,
    log_dir: &Path,
    deadline: Instant,
) -> anyhow::Result<(Child, u16)> {
    let mut last = String::new();
    for attempt in 1..=5 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = work.join("stderr").join(format!("ingest-{attempt}.stderr"));
        let file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("ingest")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log-dir")
            .arg(log_dir)
            .args(["--stream", STREAM, "--fsync", "always"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("cannot start weir ingest")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                last = format!(
                    "weir ingest exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default().trim()
                );
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok((child, port));
            }
            if Instant::now() >= deadline || started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("weir ingest did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    bail!("weir ingest failed to start 5 times; last: {last}")
}

// ---------------------------------------------------------------------------
// The producer

struct Production {
    requests: u64,
    elapsed: Duration,
}

/// Posts the first `events` events in order, `batch` per request, at most
/// `rate` per second, one request at a time. Keeps one request back per kill
/// still to come. Any failed request is fatal: a blind retry could append
/// twice.
fn produce(
    port: u16,
    events: u64,
    batch: u64,
    rate: u64,
    kills: u32,
    shared: &Shared,
    deadline: Instant,
) -> anyhow::Result<Production> {
    let batches = events.div_ceil(batch);
    let mut generator = fraud_v1::Generator::new();
    let mut body = Vec::with_capacity(batch as usize * 110);
    let started = Instant::now();
    let mut next_offset = 0u64;
    for j in 0..batches {
        let first = j * batch;
        let n = batch.min(events - first);
        body.clear();
        for i in first..first + n {
            let t = generator.next_event(i, fraud_v1::BASE_TS + i as i64);
            fraud_v1::write_json(&t, &mut body);
        }
        let due = started + Duration::from_secs_f64(first as f64 / rate as f64);
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                bail!("stopped");
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("deadline passed after {first} events");
            }
            let pending = kills.saturating_sub(shared.kills_done.load(Ordering::SeqCst));
            if now >= due && batches - j > u64::from(pending) {
                break;
            }
            std::thread::sleep(
                due.saturating_duration_since(now)
                    .clamp(Duration::from_millis(1), Duration::from_millis(10)),
            );
        }
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_secs(60));
        let (start, end, accepted) = post(port, &body, timeout)
            .with_context(|| format!("request {} (events {first}..{})", j + 1, first + n))?;
        if accepted != n || end - start != n || start != next_offset {
            bail!(
                "request {} (events {first}..{}): acknowledged {accepted} records at offsets \
                 {start}..{end}, expected {n} at {next_offset}..{}",
                j + 1,
                first + n,
                next_offset + n
            );
        }
        next_offset = end;
        lock(&shared.acks).push(Ack {
            first_event: first,
            start,
            end,
        });
        shared.acked_events.store(first + n, Ordering::SeqCst);
    }
    Ok(Production {
        requests: batches,
        elapsed: started.elapsed(),
    })
}

/// POSTs JSON lines; returns the acknowledged `(start, end, accepted)`.
fn post(port: u16, body: &[u8], timeout: Duration) -> anyhow::Result<(u64, u64, u64)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout.min(Duration::from_secs(10)))
        .with_context(|| format!("cannot connect to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    let head = format!(
        "POST /v1/streams/{STREAM}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the response")?;
    let (status, body) = parse_response(&raw)?;
    if status != 200 {
        bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "the response is not JSON: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        )
    })?;
    let offsets = v["offsets"].as_array().filter(|a| a.len() == 2);
    match (
        offsets.and_then(|a| a[0].as_u64()),
        offsets.and_then(|a| a[1].as_u64()),
        v["accepted"].as_u64(),
    ) {
        (Some(start), Some(end), Some(accepted)) if start <= end => Ok((start, end, accepted)),
        _ => bail!("unexpected response {v}"),
    }
}

/// Splits an HTTP/1.1 response into status and body (Content-Length or
/// chunked).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| {
            format!(
                "incomplete HTTP response: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            )
        })?;
    let head = std::str::from_utf8(&raw[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let rest = &raw[end + 4..];
    if chunked {
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = rest[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("truncated chunked body")?;
            let size_text = std::str::from_utf8(&rest[pos..pos + line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            pos += line_end + 2;
            if size == 0 {
                return Ok((status, body));
            }
            if rest.len() < pos + size {
                bail!("truncated chunked body");
            }
            body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
    }
    match length {
        Some(n) if rest.len() < n => bail!("truncated body ({} of {n} bytes)", rest.len()),
        Some(n) => Ok((status, rest[..n].to_vec())),
        None => Ok((status, rest.to_vec())),
    }
}

// ---------------------------------------------------------------------------
// Verification

struct LogCheck {
    /// Acknowledged events missing from the log or held with other bytes.
    lost: u64,
    /// Records in the log beyond the acknowledged ones.
    extra: u64,
    notes: Vec<String>,
}

/// Reads the log back: every acknowledged offset must hold exactly the bytes
/// posted for it (the JSON line without its newline).
fn verify_log(log_dir: &Path, acks: &[Ack], events: u64) -> anyhow::Result<LogCheck> {
    let acked: u64 = acks.iter().map(|a| a.end - a.start).sum();
    if acked != events {
        bail!("only {acked} of {events} events were acknowledged");
    }
    // Read-only, as the pipelines read it.
    let mut reader = weir_log::TailReader::new(log_dir, STREAM, 0);
    let end = reader
        .end_offset()
        .with_context(|| format!("cannot read stream {STREAM} of {}", log_dir.display()))?;
    let mut check = LogCheck {
        lost: 0,
        extra: end.saturating_sub(acked),
        notes: Vec::new(),
    };
    let mut generator = fraud_v1::Generator::new();
    let mut expected = Vec::new();
    let mut next_event = 0u64;
    for ack in acks {
        if ack.first_event != next_event {
            bail!(
                "acknowledged requests are not contiguous at event {}",
                ack.first_event
            );
        }
        let n = ack.end - ack.start;
        let mut got: Vec<(u64, Vec<u8>)> = Vec::with_capacity(n as usize);
        let mut from = ack.start;
        while from < ack.end {
            match reader.read(from, (ack.end - from) as usize) {
                Ok(r) if r.is_empty() => break,
                Ok(r) => {
                    from = r.last().map(|x| x.0 + 1).unwrap_or(ack.end);
                    got.extend(r.into_iter().filter(|x| x.0 < ack.end));
                }
                Err(e) => {
                    check.notes.push(format!("reading offset {from}: {e}"));
                    break;
                }
            }
        }
        let by_offset: HashMap<u64, &[u8]> = got.iter().map(|(o, b)| (*o, b.as_slice())).collect();
        for k in 0..n {
            let i = ack.first_event + k;
            let t = generator.next_event(i, fraud_v1::BASE_TS + i as i64);
            expected.clear();
            fraud_v1::write_json(&t, &mut expected);
            expected.pop();
            let offset = ack.start + k;
            match by_offset.get(&offset) {
                Some(b) if *b == expected.as_slice() => {}
                other => {
                    check.lost += 1;
                    if check.notes.len() < 10 {
                        check.notes.push(match other {
                            None => format!(
                                "event {i}: acknowledged at offset {offset}, missing from the log"
                            ),
                            Some(b) => format!(
                                "event {i}: offset {offset} holds {:?}",
                                String::from_utf8_lossy(b)
                            ),
                        });
                    }
                }
            }
        }
        next_event += n;
    }
    Ok(check)
}

#[derive(Default)]
struct SinkCheck {
    alerts: u64,
    checksum: u64,
    reference_alerts: u64,
    reference_checksum: u64,
    /// Reference alerts absent from the sink.
    missing: u64,
    /// Lines whose txn_id appeared before.
    duplicated: u64,
    /// Lines whose txn_id is not a reference alert.
    unexpected: u64,
    /// Lines of reference alerts with another card or score.
    mismatched: u64,
    bad_lines: u64,
    duplicate_ids: u64,
    missing_ids: u64,
    notes: Vec<String>,
}

/// Compares the sink's lines with the reference alerts (score bit for bit).
fn verify_sink(path: &Path, events: u64) -> anyhow::Result<SinkCheck> {
    let reference: HashMap<u64, (u64, u64)> = fraud_v1::alerts(events)
        .into_iter()
        .map(|(t, c, s)| (t, (c, s.to_bits())))
        .collect();
    let mut check = SinkCheck {
        reference_alerts: reference.len() as u64,
        reference_checksum: reference.keys().fold(0u64, |a, t| a.wrapping_add(*t)),
        ..Default::default()
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            check.notes.push(format!("no sink file {}", path.display()));
            Vec::new()
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    let note = |check: &mut SinkCheck, s: String| {
        if check.notes.len() < 20 {
            check.notes.push(s);
        }
    };
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let v: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        let fields = v.as_ref().and_then(|v| {
            Some((
                v.get("txn_id")?.as_u64()?,
                v.get("card_id")?.as_u64()?,
                v.get("score")?.as_f64()?,
                v.get("_id").and_then(|x| x.as_u64()),
            ))
        });
        let Some((txn, card, score, id)) = fields else {
            check.bad_lines += 1;
            note(
                &mut check,
                format!(
                    "{}:{}: not an alert line: {:?}",
                    path.display(),
                    n + 1,
                    String::from_utf8_lossy(line)
                ),
            );
            continue;
        };
        check.alerts += 1;
        check.checksum = check.checksum.wrapping_add(txn);
        match id {
            Some(id) if !ids.insert(id) => {
                check.duplicate_ids += 1;
                note(&mut check, format!("line {}: _id {id} seen before", n + 1));
            }
            Some(_) => {}
            None => check.missing_ids += 1,
        }
        if !seen.insert(txn) {
            check.duplicated += 1;
            note(
                &mut check,
                format!("line {}: txn_id {txn} seen before", n + 1),
            );
            continue;
        }
        match reference.get(&txn) {
            None => {
                check.unexpected += 1;
                note(
                    &mut check,
                    format!("line {}: txn_id {txn} is not a reference alert", n + 1),
                );
            }
            Some(&(c, s)) if c != card || s != score.to_bits() => {
                check.mismatched += 1;
                note(
                    &mut check,
                    format!(
                        "line {}: txn_id {txn}: card {card} score {score:?}, expected card {c} score {:?}",
                        n + 1,
                        f64::from_bits(s)
                    ),
                );
            }
            Some(_) => {}
        }
    }
    let mut missing: Vec<u64> = reference
        .keys()
        .filter(|t| !seen.contains(*t))
        .copied()
        .collect();
    missing.sort_unstable();
    check.missing = missing.len() as u64;
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(u64::to_string).collect();
        check.notes.push(format!(
            "{} reference alerts missing, e.g. txn_id {}",
            missing.len(),
            shown.join(", ")
        ));
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let raw =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(raw).unwrap(), (200, b"hello".to_vec()));
        let raw = b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (400, b"abcde".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(5));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(10));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn the_pipeline_is_the_example_on_a_log() {
        let work = Path::new("/tmp/w");
        let text = pipeline_text(
            &example_dir(),
            work,
            &work.join("log"),
            &work.join("out/alerts.jsonl"),
            200,
        )
        .unwrap();
        assert!(text.contains("follow = true"));
        assert!(text.contains("interval = \"200ms\""));
        assert!(text.contains("where = \"score > 0.9\""));
        assert!(text.contains("fraud_lr.onnx\"\n"));
        assert!(!text.contains("path = \"model/"));
        assert!(!text.contains("transactions.jsonl"));
    }
}
