//! `weir chaos fraud-v1 --spike FACTOR`: a step in load absorbed by the
//! autoscaler, for real, on this machine.
//!
//! fraud-v1 is split into tasks over a log stream; this process produces
//! into the partitions at `--rate` events/s, then at FACTOR times that for
//! `--spike-for-s` seconds from `--spike-at-s`, then at `--rate` again for
//! as long as before the step. The workers are not started here: `weir
//! scaler --backend local` (a child) starts and stops `weir run` workers as
//! it decides from their metrics endpoints. At the end the scaler is
//! stopped (it stops its workers gracefully) and:
//!
//! * the alerts of all tasks must equal the reference exactly, through
//!   every scale-up and scale-down (`lost=0 duplicated=0`);
//! * latency is sampled every 100 ms as the age of the oldest record any
//!   task has not committed (its committed consumer position, which moves
//!   at checkpoints: an upper bound of the record's latency), with p50,
//!   p99 and max before the step and through it;
//! * time to absorb is from the step until the sampled latency stays
//!   within `--objective-ms` to the end of the high load;
//! * each worker's start-up is from the scaler starting it to its first
//!   processed record (its standard error in `stderr/w<N>.log`).
//!
//! The scaler's standard error goes to `stderr/scaler.log`, at
//! `warn,weir_scaler=info` (a decision is logged when the count changes),
//! or at the filter `WEIR_SPIKE_SCALER_LOG` gives (`weir_scaler=debug`
//! logs every decision).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use weir_metrics::client::{self, Endpoint};
use weir_metrics::exposition::Scrape;

use super::flow::{expected_alerts, percentile, split_pipeline, Producer, Sampler, KEY_GROUPS};
use super::{lock, ChaosArgs};

/// What the scaler said, when: a worker started or stopped.
#[derive(Debug, Clone, Copy)]
struct ScalerEvent {
    worker: usize,
    started: bool,
    at: Instant,
}

fn parse_scaler_line(line: &str, at: Instant) -> Option<ScalerEvent> {
    let (started, rest) = if let Some((_, r)) = line.split_once("scaler: started worker ") {
        (true, r)
    } else if let Some((_, r)) = line.split_once("scaler: stopping worker ") {
        (false, r)
    } else {
        return None;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(ScalerEvent {
        worker: digits.parse().ok()?,
        started,
        at,
    })
}

/// The production schedule: `rate`, `factor` × `rate` from `at` for
/// `length`, then `rate` for `at` again.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    rate: f64,
    factor: f64,
    at: f64,
    length: f64,
}

impl Schedule {
    fn events(&self) -> u64 {
        (self.rate * self.at * 2.0 + self.rate * self.factor * self.length).round() as u64
    }

    /// When the `sent`th event is due, from the start.
    fn due(&self, sent: u64) -> Duration {
        let n = sent as f64;
        let before = self.rate * self.at;
        let during = before + self.rate * self.factor * self.length;
        let s = if n <= before {
            n / self.rate
        } else if n <= during {
            self.at + (n - before) / (self.rate * self.factor)
        } else {
            self.at + self.length + (n - during) / self.rate
        };
        Duration::from_secs_f64(s)
    }
}

/// From `onset`: the time after which every sample up to `end` is within
/// `objective`; `None` when the last one before `end` is not.
fn time_to_absorb(
    samples: &[(Instant, Duration)],
    onset: Instant,
    end: Instant,
    objective: Duration,
) -> Option<Duration> {
    let window: Vec<_> = samples
        .iter()
        .filter(|(at, _)| *at >= onset && *at <= end)
        .collect();
    if window.last().is_none_or(|(_, lag)| *lag > objective) {
        return None;
    }
    Some(
        window
            .iter()
            .rev()
            .find(|(_, lag)| *lag > objective)
            .map_or(Duration::ZERO, |(at, _)| {
                at.saturating_duration_since(onset)
            }),
    )
}

fn latencies(samples: &[(Instant, Duration)], from: Instant, to: Instant) -> Vec<Duration> {
    let mut v: Vec<Duration> = samples
        .iter()
        .filter(|(at, _)| *at >= from && *at < to)
        .map(|(_, lag)| *lag)
        .collect();
    v.sort_unstable();
    v
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Each worker's CPU capped at a share of one CPU, through a cgroup of its
/// own (cgroup v1's `cpu` controller, or v2's `cpu.max`): on a small
/// machine this gives every worker a capacity of its own, as separate
/// machines or pods would have, instead of all of them sharing every core.
struct CpuLimit {
    /// The cgroup directory of worker `{worker}` (a shell word with `$1`).
    dir: String,
    /// The shell lines that set the cap.
    set: String,
    /// The directories made, for removal: the pattern without `$1`.
    prefix: String,
    parent: std::path::PathBuf,
}

impl CpuLimit {
    fn new(share: f64, suffix: u32) -> anyhow::Result<CpuLimit> {
        if !(share > 0.0 && share <= 64.0) {
            bail!("--worker-cpu {share}: a share of one CPU, above 0");
        }
        let period = 100_000u64;
        let quota = ((share * period as f64).round() as u64).max(1_000);
        let prefix = format!("weir-spike-{suffix}-w");
        let v1 = std::path::Path::new("/sys/fs/cgroup/cpu");
        let v2 = std::path::Path::new("/sys/fs/cgroup");
        let (parent, set) = if v1.join("cpu.cfs_quota_us").exists() {
            (
                v1.to_path_buf(),
                format!("echo {period} > \"$CG/cpu.cfs_period_us\" && echo {quota} > \"$CG/cpu.cfs_quota_us\""),
            )
        } else if v2.join("cgroup.controllers").exists() {
            (
                v2.to_path_buf(),
                format!("echo \"{quota} {period}\" > \"$CG/cpu.max\""),
            )
        } else {
            bail!("--worker-cpu needs a cgroup cpu controller at /sys/fs/cgroup/cpu (v1) or /sys/fs/cgroup (v2)");
        };
        // Refused now rather than by every worker: the cgroups need root.
        let probe = parent.join(format!("{prefix}probe"));
        std::fs::create_dir(&probe)
            .with_context(|| format!("--worker-cpu: cannot make cgroup {}", probe.display()))?;
        let _ = std::fs::remove_dir(&probe);
        Ok(CpuLimit {
            dir: format!("{}/{prefix}$1", parent.display()),
            set,
            prefix,
            parent,
        })
    }

    /// The lines of the worker's script that move it into its cgroup.
    fn script(&self) -> String {
        format!(
            "CG={}\nmkdir -p \"$CG\" && {} && echo $$ > \"$CG/cgroup.procs\" || exit 70\n",
            self.dir, self.set
        )
    }

    /// Removes the workers' cgroups (empty once their processes ended).
    fn remove(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.parent) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.prefix) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}

/// The spike run; `Ok(true)` when nothing was lost or duplicated.
pub(super) fn chaos_spike(args: &ChaosArgs, work: &Path, factor: u32) -> anyhow::Result<bool> {
    let tasks = args.tasks.unwrap_or(6);
    let max_workers = args.workers.unwrap_or(tasks);
    let Some(rate) = args.rate else {
        bail!("--spike needs --rate, the events per second before and after the step");
    };
    if factor < 2 || tasks == 0 || tasks > KEY_GROUPS || !(1..=10).contains(&max_workers) {
        bail!("--spike must be at least 2, --tasks between 1 and {KEY_GROUPS}, --workers (the most workers) between 1 and 10");
    }
    if work.to_string_lossy().contains(char::is_whitespace) {
        bail!("the work directory {} has a space in its path, which the scaler's worker command cannot hold", work.display());
    }
    let schedule = Schedule {
        rate: rate as f64,
        factor: f64::from(factor),
        at: args.spike_at_s as f64,
        length: args.spike_for_s as f64,
    };
    let events = schedule.events();
    let objective = Duration::from_millis(args.objective_ms);
    let exe = std::env::current_exe().context("cannot locate the weir executable")?;
    println!(
        "chaos fraud-v1 spike: {events} events into {tasks} partitions at {rate} events/s, {factor}x from {} s for {} s; \
         weir scaler (local backend, 1 to {max_workers} workers, a decision every second); checkpoints every {} ms; work dir {}",
        args.spike_at_s,
        args.spike_for_s,
        args.checkpoint_interval_ms,
        work.display()
    );

    let logs = work.join("stderr");
    std::fs::create_dir_all(&logs)?;
    let (pipeline, stream) = split_pipeline(work, tasks, args.checkpoint_interval_ms)?;

    // Worker N serves its metrics on port 2N<suffix>, which the scaler's
    // `{worker}` template and the script compute alike.
    let suffix = 100 + std::process::id() % 900;
    let script = work.join("worker.sh");
    let cgroups = match args.worker_cpu {
        Some(share) => Some(CpuLimit::new(share, suffix)?),
        None => None,
    };
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# worker $1 of the spike run: weir run, metrics on port 2$1{suffix}\n{}\
             exec {exe} run {pipeline} --shards 1 --member-id w$1-$$ --metrics-address 127.0.0.1:2$1{suffix} 2>>{logs}/w$1.log\n",
            cgroups.as_ref().map_or(String::new(), CpuLimit::script),
            exe = exe.display(),
            pipeline = pipeline.display(),
            logs = logs.display(),
        ),
    )?;
    let scaler_metrics = format!("127.0.0.1:{}", free_port()?);
    let mut scaler = Command::new(&exe)
        .args(["scaler", "--listen", "127.0.0.1:0", "--backend", "local"])
        .args([
            "--local-command",
            &format!("sh {} {{worker}}", script.display()),
        ])
        .args([
            "--workers-metrics",
            &format!("127.0.0.1:2{{worker}}{suffix}"),
        ])
        .args(["--metrics-address", &scaler_metrics])
        .args([
            "--min-workers",
            "1",
            "--max-workers",
            &max_workers.to_string(),
        ])
        .args([
            "--interval",
            "1s",
            "--drain-time",
            "5s",
            "--startup-time",
            "3s",
        ])
        .args([
            "--forecast-window",
            "10s",
            "--scale-down-window",
            "15s",
            "--stop-grace",
            "20s",
        ])
        .args(
            args.worker_capacity
                .map(|c| vec!["--worker-capacity".to_string(), c.to_string()])
                .unwrap_or_default(),
        )
        .env(
            "RUST_LOG",
            std::env::var("WEIR_SPIKE_SCALER_LOG")
                .unwrap_or_else(|_| "warn,weir_scaler=info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start weir scaler")?;
    let events_seen: Arc<Mutex<Vec<ScalerEvent>>> = Arc::default();
    {
        let stderr = scaler.stderr.take().context("no standard error")?;
        let mut file = std::fs::File::create(logs.join("scaler.log"))?;
        let seen = events_seen.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                if let Some(e) = parse_scaler_line(&line, Instant::now()) {
                    lock(&seen).push(e);
                }
            }
        });
    }

    // Production starts once the scaler's first worker serves its
    // endpoint, as a running deployment would have it.
    let first = Endpoint::parse(&format!("127.0.0.1:20{suffix}"))?;
    let up_by = Instant::now() + Duration::from_secs(60);
    while client::get(&first, "/healthz", Duration::from_secs(1), 4096).is_err() {
        if Instant::now() > up_by {
            let _ = scaler.kill();
            bail!("the scaler's first worker did not serve 127.0.0.1:20{suffix} within 60 s (see stderr/)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = schedule;
    let producer = Producer::start(stream.clone(), tasks, events, args.batch, move |n| s.due(n));
    let started = producer.started;
    let sampler = Sampler::start(stream.clone(), tasks, &producer);
    let watch = Watch::start(&scaler_metrics, &logs, events_seen.clone());
    let outcome = finish(args, work, tasks, events, producer, sampler, &mut scaler);
    let watched = watch.stop();
    if let Some(c) = &cgroups {
        c.remove();
    }
    let (samples, production, expected, got, dead_letters, clean) = outcome?;

    let (lost, duplicated) = super::workers::compare(&got, &expected);
    let onset = started + Duration::from_secs(args.spike_at_s);
    let high_end = onset + Duration::from_secs(args.spike_for_s);
    let before = latencies(&samples, started + Duration::from_secs(5), onset);
    let through = latencies(&samples, onset, started + production);
    let absorb = time_to_absorb(&samples, onset, high_end, objective);
    let seen = lock(&events_seen).clone();
    let starts: Vec<String> = seen
        .iter()
        .filter(|e| e.started)
        .map(|e| {
            format!(
                "{:+.1}",
                e.at.saturating_duration_since(started).as_secs_f64() - args.spike_at_s as f64
            )
        })
        .collect();
    let mut startups = watched.startups.clone();
    startups.sort_unstable();
    let ms = |d: Duration| d.as_millis();
    let passed = lost == 0 && duplicated == 0 && dead_letters == 0 && clean;
    println!(
        "worker starts (s from the step): {}; most workers {}; measured true rate per worker (scaler) up to {:.0} events/s",
        if starts.is_empty() { "none".into() } else { starts.join(" ") },
        watched.most_workers,
        watched.true_rate
    );
    println!(
        "chaos fraud-v1 spike={factor} rate={rate} tasks={tasks} alerts={} expected={} lost={lost} duplicated={duplicated} \
         dead_letters={dead_letters} absorb_s={} p50_before_ms={} p99_before_ms={} p50_spike_ms={} p99_spike_ms={} \
         max_spike_ms={} startup_p50_ms={} startup_max_ms={} objective_ms={} result={}",
        got.len(),
        expected.len(),
        absorb.map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64())),
        ms(percentile(&before, 0.5)),
        ms(percentile(&before, 0.99)),
        ms(percentile(&through, 0.5)),
        ms(percentile(&through, 0.99)),
        ms(through.last().copied().unwrap_or_default()),
        ms(percentile(&startups, 0.5)),
        ms(startups.last().copied().unwrap_or_default()),
        args.objective_ms,
        if passed { "ok" } else { "FAILED" },
    );
    Ok(passed)
}

type Finished = (
    Vec<(Instant, Duration)>,
    Duration,
    Vec<(u64, u64, u64)>,
    Vec<(u64, u64, u64)>,
    usize,
    bool,
);

/// Waits for production and every alert, then stops the scaler (and so
/// its workers) with SIGTERM.
fn finish(
    args: &ChaosArgs,
    work: &Path,
    tasks: u32,
    events: u64,
    producer: Producer,
    sampler: Sampler,
    scaler: &mut Child,
) -> anyhow::Result<Finished> {
    let started = producer.started;
    let produced = producer.join();
    let production = started.elapsed();
    let expected = expected_alerts(events);
    let deadline = Instant::now() + Duration::from_secs(args.deadline_s);
    while produced.is_ok()
        && super::workers::alerts(work, tasks)?.len() < expected.len()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let samples = sampler.stop();
    let _ = Command::new("kill")
        .args(["-TERM", &scaler.id().to_string()])
        .status();
    let status = scaler.wait()?;
    produced?;
    let clean = status.success();
    if !clean {
        println!("weir scaler exited with {status} (see stderr/scaler.log)");
    }
    let got = super::workers::alerts(work, tasks)?;
    let mut dead_letters = 0;
    for t in 0..tasks {
        let dl = work.join("out").join(format!("dead_letter-{t}.jsonl"));
        if let Ok(text) = std::fs::read_to_string(&dl) {
            dead_letters += text.lines().count();
        }
    }
    Ok((samples, production, expected, got, dead_letters, clean))
}

/// What is watched while the run goes: the scaler's gauges (every
/// second) and each started worker's first processed record.
struct Watch {
    state: Arc<Mutex<Watched>>,
    running: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

#[derive(Debug, Clone, Default)]
struct Watched {
    most_workers: usize,
    true_rate: f64,
    /// From the scaler starting a worker to its first processed record.
    startups: Vec<Duration>,
}

impl Watch {
    fn start(scaler: &str, logs: &Path, events: Arc<Mutex<Vec<ScalerEvent>>>) -> Watch {
        use std::sync::atomic::Ordering;
        let state: Arc<Mutex<Watched>> = Arc::default();
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let endpoint = Endpoint::parse(scaler).ok();
        let logs = logs.to_path_buf();
        let handle = {
            let (state, running) = (state.clone(), running.clone());
            std::thread::spawn(move || {
                // Per start seen: (worker, when, the log's length then, done).
                let mut pending: Vec<(usize, Instant, u64)> = Vec::new();
                let mut handled = 0;
                let mut last_scrape = Instant::now() - Duration::from_secs(1);
                while running.load(Ordering::Acquire) {
                    for e in lock(&events).iter().skip(handled) {
                        handled += 1;
                        if e.started {
                            let len = std::fs::metadata(logs.join(format!("w{}.log", e.worker)))
                                .map_or(0, |m| m.len());
                            pending.push((e.worker, e.at, len));
                        }
                    }
                    pending.retain(|(worker, at, from)| {
                        let text =
                            std::fs::read(logs.join(format!("w{worker}.log"))).unwrap_or_default();
                        let new = text.get(*from as usize..).unwrap_or_default();
                        if String::from_utf8_lossy(new).contains("first record processed") {
                            lock(&state).startups.push(at.elapsed());
                            return false;
                        }
                        true
                    });
                    if let Some(ep) = endpoint
                        .as_ref()
                        .filter(|_| last_scrape.elapsed() >= Duration::from_secs(1))
                    {
                        last_scrape = Instant::now();
                        if let Ok(r) = client::get(ep, "/metrics", Duration::from_secs(1), 1 << 20)
                        {
                            let s = Scrape::parse(&String::from_utf8_lossy(&r.body));
                            let mut w = lock(&state);
                            if let Some(n) = s.value("weir_scaler_current_workers", &[]) {
                                w.most_workers = w.most_workers.max(n as usize);
                            }
                            if let Some(r) = s.value("weir_scaler_true_rate_events_per_second", &[])
                            {
                                w.true_rate = w.true_rate.max(r);
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Watch {
            state,
            running,
            handle,
        }
    }

    fn stop(self) -> Watched {
        self.running
            .store(false, std::sync::atomic::Ordering::Release);
        let _ = self.handle.join();
        let w = lock(&self.state).clone();
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_steps_up_and_back() {
        let s = Schedule {
            rate: 100.0,
            factor: 6.0,
            at: 10.0,
            length: 5.0,
        };
        assert_eq!(s.events(), 1000 + 3000 + 1000);
        assert_eq!(s.due(500), Duration::from_secs(5));
        assert_eq!(s.due(1000), Duration::from_secs(10));
        assert_eq!(s.due(2500), Duration::from_millis(12_500));
        assert_eq!(s.due(4000), Duration::from_secs(15));
        assert_eq!(s.due(5000), Duration::from_secs(25));
    }

    #[test]
    fn absorbed_once_latency_stays_within_the_objective() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let ms = Duration::from_millis;
        let samples = [
            (at(0), ms(100)),
            (at(1000), ms(900)),
            (at(2000), ms(3000)),
            (at(3000), ms(1500)),
            (at(4000), ms(400)),
            (at(5000), ms(300)),
            (at(6000), ms(5000)),
        ];
        let objective = ms(1000);
        assert_eq!(
            time_to_absorb(&samples, at(500), at(5500), objective),
            Some(ms(2500))
        );
        // Bad at the end of the high load: never absorbed.
        assert_eq!(time_to_absorb(&samples, at(500), at(6500), objective), None);
        // Never above the objective: absorbed at once.
        assert_eq!(
            time_to_absorb(&samples, at(3500), at(5500), objective),
            Some(Duration::ZERO)
        );
        let line =
            "2026-12-07T04:00:00Z  INFO weir_scaler::backend: scaler: started worker 3: sh w.sh 3";
        let e = parse_scaler_line(line, t0).expect("a start");
        assert_eq!((e.worker, e.started), (3, true));
        let e = parse_scaler_line("x scaler: stopping worker 12 (SIGTERM)", t0).expect("a stop");
        assert_eq!((e.worker, e.started), (12, false));
        assert!(parse_scaler_line("scaler: serving", t0).is_none());
    }
}
