//! `weir chaos fraud-v1 --workers N`: the crash test of a pipeline split
//! into tasks and shared by several `weir run` processes.
//!
//! This process is the producer: it appends fraud-v1 transactions to the
//! partitions of a log stream itself, each to the partition of its card's
//! task, at a steady rate (`weir ingest` is not in the loop: its own kills
//! are what the single-process mode tests). Meanwhile workers are killed
//! with SIGKILL at random and new ones join, so tasks move both ways: taken
//! over from a dead member, handed over to a new one. At the end the
//! workers are stopped with SIGTERM and:
//!
//! * the alerts of all tasks together must equal the reference exactly
//!   (`lost=0 duplicated=0`) and no record may be a dead letter;
//! * each move is timed, from the kill (or the hand-over's start) to the
//!   new owner's first processed record (its `weir run: task T (epoch E):
//!   first record processed` line);
//! * availability is the share of whole seconds of production in which
//!   every task's committed consumer position stayed within the latency
//!   objective of what was appended to its partition.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::flow::{expected_alerts, percentile, split_pipeline, Producer, Sampler, KEY_GROUPS};
use super::{lock, ChaosArgs, Rng};

/// What a worker said, when.
#[derive(Debug, Clone)]
enum Said {
    /// It processed the first record of a task it took.
    Started {
        member: String,
        task: u32,
        at: Instant,
    },
    /// It began handing a task over.
    Stopping {
        member: String,
        task: u32,
        at: Instant,
    },
}

fn parse_line(member: &str, line: &str, at: Instant) -> Option<Said> {
    let rest = line.strip_prefix("weir run: task ")?;
    let (task, rest) = rest.split_once(" (epoch ")?;
    let task = task.parse().ok()?;
    let (_, rest) = rest.split_once("): ")?;
    let member = member.to_string();
    if rest.starts_with("first record processed") {
        Some(Said::Started { member, task, at })
    } else if rest.starts_with("stopping") {
        Some(Said::Stopping { member, task, at })
    } else {
        None
    }
}

struct Worker {
    id: String,
    child: Child,
}

fn spawn_worker(
    exe: &Path,
    pipeline: &Path,
    id: &str,
    logs: &Path,
    said: &Arc<Mutex<Vec<Said>>>,
) -> anyhow::Result<Worker> {
    let mut child = Command::new(exe)
        .args(["run", "--shards", "1", "--member-id", id])
        .arg(pipeline)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start weir run")?;
    let stderr = child.stderr.take().context("no standard error")?;
    let mut file = File::create(logs.join(format!("{id}.log")))?;
    let said = said.clone();
    let member = id.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let at = Instant::now();
            let _ = writeln!(file, "{line}");
            if let Some(s) = parse_line(&member, &line, at) {
                lock(&said).push(s);
            }
        }
    });
    Ok(Worker {
        id: id.to_string(),
        child,
    })
}

/// The test with `workers` processes; `Ok(true)` when it passed.
pub(super) fn chaos_workers(args: &ChaosArgs, work: &Path, workers: u32) -> anyhow::Result<bool> {
    let tasks = args.tasks.unwrap_or(workers * 2);
    if workers == 0 || tasks == 0 || tasks > KEY_GROUPS {
        bail!("--workers must be positive and --tasks between 1 and {KEY_GROUPS}");
    }
    let exe = std::env::current_exe().context("cannot locate the weir executable")?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let mut rng = Rng::new(seed);
    let kill_every = Duration::from_millis(args.kill_every_ms);
    let seconds = (kill_every.as_secs_f64() * (f64::from(args.kills) + 1.0)).max(3.0);
    let rate = args
        .rate
        .unwrap_or_else(|| ((args.events as f64 / seconds).ceil() as u64).max(1));
    let objective = Duration::from_millis(args.objective_ms);
    println!(
        "chaos fraud-v1: {} events at up to {rate} events/s into {tasks} partitions, {workers} workers, \
         {} kills (one every {} ms, each followed by a new worker), checkpoints every {} ms, \
         seed {seed}, work dir {}",
        args.events,
        args.kills,
        args.kill_every_ms,
        args.checkpoint_interval_ms,
        work.display()
    );

    let logs = work.join("stderr");
    std::fs::create_dir_all(&logs)?;
    let (pipeline, stream) = split_pipeline(work, tasks, args.checkpoint_interval_ms)?;

    let said = Arc::new(Mutex::new(Vec::new()));
    let mut live: Vec<Worker> = Vec::new();
    let mut next_id = 1;
    let mut new_worker = |live: &mut Vec<Worker>| -> anyhow::Result<()> {
        let id = format!("w{next_id}");
        next_id += 1;
        live.push(spawn_worker(&exe, &pipeline, &id, &logs, &said)?);
        Ok(())
    };
    for _ in 0..workers {
        new_worker(&mut live)?;
    }

    // The producer, at a steady rate, and the sampler of task lags.
    let producer = Producer::start(
        stream.clone(),
        tasks,
        args.events,
        args.batch,
        move |sent| Duration::from_secs_f64(sent as f64 / rate as f64),
    );
    let started = producer.started;
    let sampler = Sampler::start(stream.clone(), tasks, &producer);

    // Kills, each followed by a new worker.
    let mut kills: Vec<(Instant, String)> = Vec::new();
    for k in 0..args.kills {
        std::thread::sleep(kill_every);
        let victim = rng.range(0, live.len() as u64 - 1) as usize;
        let mut w = live.remove(victim);
        let _ = w.child.kill();
        let _ = w.child.wait();
        let at = Instant::now();
        println!(
            "kill {}/{}: {} (SIGKILL) at {:.1} s",
            k + 1,
            args.kills,
            w.id,
            (at - started).as_secs_f64()
        );
        kills.push((at, w.id.clone()));
        std::thread::sleep(Duration::from_millis(
            rng.range(0, args.kill_every_ms / 2 + 1),
        ));
        new_worker(&mut live)?;
    }
    producer.join()?;
    let production = started.elapsed();
    // Every alert committed: the reference count reached, or give up.
    let expected = expected_alerts(args.events);
    let deadline = Instant::now() + Duration::from_secs(args.deadline_s);
    while alerts(work, tasks)?.len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let samples = sampler.stop();
    for w in &live {
        let _ = Command::new("kill")
            .args(["-TERM", &w.child.id().to_string()])
            .status();
    }
    let mut clean = true;
    for w in &mut live {
        let status = w.child.wait()?;
        if !status.success() {
            println!(
                "{} exited with {status} (see {})",
                w.id,
                logs.join(format!("{}.log", w.id)).display()
            );
            clean = false;
        }
    }

    // The outcome.
    let got = alerts(work, tasks)?;
    let (lost, duplicated) = compare(&got, &expected);
    let mut dead_letters = 0;
    for t in 0..tasks {
        let dl = work.join("out").join(format!("dead_letter-{t}.jsonl"));
        if let Ok(text) = std::fs::read_to_string(&dl) {
            dead_letters += text.lines().count();
        }
    }
    let said = lock(&said).clone();
    let mut moves = move_times(&said, &kills);
    moves.sort_unstable();
    let (available, total) = availability(&samples, started, production, objective);
    let passed = lost == 0 && duplicated == 0 && dead_letters == 0 && clean;
    println!(
        "chaos fraud-v1 workers={workers} tasks={tasks} kills={} alerts={} expected={} lost={lost} duplicated={duplicated} \
         dead_letters={dead_letters} moves={} move_p50_ms={} move_max_ms={} \
         availability={:.2}% available_s={available} seconds={total} objective_ms={} result={}",
        args.kills,
        got.len(),
        expected.len(),
        moves.len(),
        percentile(&moves, 0.5).as_millis(),
        moves.last().copied().unwrap_or_default().as_millis(),
        if total == 0 { 100.0 } else { 100.0 * available as f64 / total as f64 },
        args.objective_ms,
        if passed { "ok" } else { "FAILED" },
    );
    Ok(passed)
}

pub(super) fn alerts(work: &Path, tasks: u32) -> anyhow::Result<Vec<(u64, u64, u64)>> {
    let mut all = Vec::new();
    for t in 0..tasks {
        let path: PathBuf = work.join("out").join(format!("alerts-{t}.jsonl"));
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line)
                .with_context(|| format!("{}: an alert is not JSON", path.display()))?;
            all.push((
                v["txn_id"].as_u64().unwrap_or(u64::MAX),
                v["card_id"].as_u64().unwrap_or(u64::MAX),
                v["score"].as_f64().unwrap_or(f64::NAN).to_bits(),
            ));
        }
    }
    all.sort_unstable();
    Ok(all)
}

/// (lost, duplicated) of sorted `got` against sorted `expected`.
pub(super) fn compare(got: &[(u64, u64, u64)], expected: &[(u64, u64, u64)]) -> (usize, usize) {
    let mut counts: BTreeMap<&(u64, u64, u64), i64> = BTreeMap::new();
    for a in expected {
        *counts.entry(a).or_default() -= 1;
    }
    for a in got {
        *counts.entry(a).or_default() += 1;
    }
    let lost = counts
        .values()
        .filter(|&&c| c < 0)
        .map(|&c| -c)
        .sum::<i64>();
    let duplicated = counts.values().filter(|&&c| c > 0).sum::<i64>();
    (lost as usize, duplicated as usize)
}

/// How long each move took: for each kill, every task the killed member
/// was running until the new owner's first record; for each hand-over,
/// from its start to the same.
fn move_times(said: &[Said], kills: &[(Instant, String)]) -> Vec<Duration> {
    let next_start = |task: u32, after: Instant| {
        said.iter().find_map(|s| match s {
            Said::Started { task: t, at, .. } if *t == task && *at > after => Some(*at - after),
            _ => None,
        })
    };
    let mut out = Vec::new();
    for (killed_at, member) in kills {
        // Tasks the member was running when killed: its starts not
        // followed by its own hand-over before the kill.
        let mut running: BTreeMap<u32, bool> = BTreeMap::new();
        for s in said {
            match s {
                Said::Started {
                    member: m,
                    task,
                    at,
                } if m == member && at < killed_at => {
                    running.insert(*task, true);
                }
                Said::Stopping {
                    member: m,
                    task,
                    at,
                } if m == member && at < killed_at => {
                    running.insert(*task, false);
                }
                _ => {}
            }
        }
        for (task, _) in running.into_iter().filter(|(_, r)| *r) {
            out.extend(next_start(task, *killed_at));
        }
    }
    for s in said {
        if let Said::Stopping { task, at, .. } = s {
            out.extend(next_start(*task, *at));
        }
    }
    out
}

/// Whole seconds of production in which every sample's worst task lag was
/// within `objective`: (available, total).
fn availability(
    samples: &[(Instant, Duration)],
    started: Instant,
    production: Duration,
    objective: Duration,
) -> (u64, u64) {
    let total = production.as_secs();
    let mut bad = vec![false; total as usize];
    for (at, lag) in samples {
        let second = at.saturating_duration_since(started).as_secs();
        if second < total && *lag > objective {
            bad[second as usize] = true;
        }
    }
    (bad.iter().filter(|b| !**b).count() as u64, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_moves() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let line = "weir run: task 3 (epoch 2): first record processed (restored checkpoint 7)";
        assert!(matches!(
            parse_line("w1", line, at(0)),
            Some(Said::Started { task: 3, .. })
        ));
        assert!(parse_line("w1", "weir run: first record processed", at(0)).is_none());
        let said = vec![
            Said::Started {
                member: "w1".into(),
                task: 0,
                at: at(100),
            },
            Said::Started {
                member: "w1".into(),
                task: 1,
                at: at(110),
            },
            Said::Stopping {
                member: "w1".into(),
                task: 1,
                at: at(500),
            },
            Said::Started {
                member: "w2".into(),
                task: 1,
                at: at(800),
            },
            Said::Started {
                member: "w2".into(),
                task: 0,
                at: at(1450),
            },
        ];
        // w1 killed at 1000 ms was running task 0 only (it handed 1 over).
        let mut moves = move_times(&said, &[(at(1000), "w1".into())]);
        moves.sort_unstable();
        assert_eq!(
            moves,
            vec![Duration::from_millis(300), Duration::from_millis(450)]
        );
        assert_eq!(
            compare(
                &[(1, 1, 1), (2, 2, 2), (2, 2, 2)],
                &[(1, 1, 1), (2, 2, 2), (3, 3, 3)]
            ),
            (1, 1)
        );
        let samples = [
            (at(200), Duration::from_millis(50)),
            (at(1200), Duration::from_millis(1500)),
        ];
        assert_eq!(
            availability(
                &samples,
                t0,
                Duration::from_millis(2500),
                Duration::from_secs(1)
            ),
            (1, 2)
        );
    }
}
