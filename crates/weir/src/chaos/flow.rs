//! What the multi-process modes of `weir chaos` (`--workers`, `--spike`)
//! share: a producer that appends fraud-v1 transactions to their card's
//! partition of a log stream on a schedule, and a sampler of how far each
//! task's committed position is behind what was appended to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_workloads::fraud_v1;

use super::pipeline::{example_dir, pipeline_text};
use super::{lock, STREAM};

/// The pipeline's key groups (the example's).
pub(super) const KEY_GROUPS: u32 = 128;
/// How often task lags are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The partition (task) of a card.
pub(super) fn partition_of(card: u64, tasks: u32) -> u32 {
    let group = weir_engine::hash::key_group(weir_engine::hash::mix64(card), KEY_GROUPS);
    weir_config::task_of_group(group, KEY_GROUPS, tasks)
}

/// Writes `work/pipeline.toml`, fraud-v1 split into `tasks` tasks over a
/// log stream of as many partitions under `work/log` (alerts and dead
/// letters per task under `work/out`), and opens that stream for the
/// producer; returns the pipeline's path and the stream.
pub(super) fn split_pipeline(
    work: &std::path::Path,
    tasks: u32,
    checkpoint_interval_ms: u64,
) -> anyhow::Result<(std::path::PathBuf, Arc<weir_log::Stream>)> {
    let log_dir = work.join("log");
    let pipeline = work.join("pipeline.toml");
    let text = pipeline_text(
        &example_dir(),
        work,
        &log_dir,
        &work.join("out").join("alerts-{task}.jsonl"),
        checkpoint_interval_ms,
    )?
    .replacen("[settings]\n", &format!("[settings]\ntasks = {tasks}\n"), 1)
    .replacen(
        "follow = true\n",
        &format!("follow = true\npartitions = {tasks}\n"),
        1,
    )
    .replacen("dead_letter.jsonl", "dead_letter-{task}.jsonl", 1);
    std::fs::write(&pipeline, text)?;
    let log = weir_log::Log::open(&log_dir)?;
    let stream = log.stream(
        STREAM,
        weir_log::StreamConfig {
            partitions: tasks,
            fsync: weir_log::FsyncPolicy::Never,
            ..Default::default()
        },
    )?;
    Ok((pipeline, stream))
}

/// Per partition, (end offset, when appended) of each append.
type Appends = Vec<Vec<(u64, Instant)>>;

/// The producer thread and what it appended, when.
pub(super) struct Producer {
    pub started: Instant,
    appends: Arc<Mutex<Appends>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Producer {
    /// Appends the first `events` fraud-v1 transactions, `batch` at a time,
    /// each batch once `due(events sent so far)` after the start.
    pub fn start(
        stream: Arc<weir_log::Stream>,
        tasks: u32,
        events: u64,
        batch: u64,
        due: impl Fn(u64) -> Duration + Send + 'static,
    ) -> Producer {
        let appends: Arc<Mutex<Appends>> = Arc::new(Mutex::new(vec![Vec::new(); tasks as usize]));
        let started = Instant::now();
        let handle = {
            let appends = appends.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut json = Vec::new();
                let mut by_partition: Vec<Vec<u8>> = vec![Vec::new(); tasks as usize];
                let mut it = fraud_v1::events(events).peekable();
                let mut sent = 0u64;
                while it.peek().is_some() {
                    for b in &mut by_partition {
                        b.clear();
                    }
                    let mut bounds: Vec<Vec<usize>> = vec![Vec::new(); tasks as usize];
                    for t in it.by_ref().take(batch.max(1) as usize) {
                        json.clear();
                        fraud_v1::write_json(&t, &mut json);
                        let p = partition_of(t.card_id, tasks) as usize;
                        by_partition[p].extend_from_slice(&json);
                        bounds[p].push(by_partition[p].len());
                        sent += 1;
                    }
                    for (p, data) in by_partition.iter().enumerate() {
                        let mut start = 0;
                        let records: Vec<&[u8]> = bounds[p]
                            .iter()
                            .map(|&end| {
                                let r = &data[start..end];
                                start = end;
                                r
                            })
                            .collect();
                        if records.is_empty() {
                            continue;
                        }
                        let offsets = stream.partition(p as u32).append(&records)?;
                        lock(&appends)[p].push((offsets.end, Instant::now()));
                    }
                    if let Some(wait) = (started + due(sent)).checked_duration_since(Instant::now())
                    {
                        std::thread::sleep(wait);
                    }
                }
                Ok(())
            })
        };
        Producer {
            started,
            appends,
            handle,
        }
    }

    /// Waits for the last append.
    pub fn join(self) -> anyhow::Result<Arc<Mutex<Appends>>> {
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
        Ok(self.appends)
    }
}

/// Every 100 ms: the oldest append of any task not yet covered by that
/// task's committed consumer position (`fraud-v1-task-N`), as its age.
pub(super) struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, Duration)>>>,
    sampling: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Sampler {
    pub fn start(stream: Arc<weir_log::Stream>, tasks: u32, producer: &Producer) -> Sampler {
        let samples: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
        let sampling = Arc::new(AtomicBool::new(true));
        let appends = producer.appends.clone();
        let handle = {
            let (samples, sampling) = (samples.clone(), sampling.clone());
            std::thread::spawn(move || {
                let consumer = |t: u32| format!("fraud-v1-task-{t}");
                while sampling.load(Ordering::Acquire) {
                    let now = Instant::now();
                    let positions: HashMap<String, Vec<u64>> = stream
                        .consumer_offsets()
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    let mut worst = Duration::ZERO;
                    let appends = lock(&appends);
                    for t in 0..tasks {
                        let done = positions
                            .get(&consumer(t))
                            .and_then(|o| o.get(t as usize).copied())
                            .unwrap_or(0);
                        if let Some(&(_, at)) =
                            appends[t as usize].iter().find(|(end, _)| *end > done)
                        {
                            worst = worst.max(now.saturating_duration_since(at));
                        }
                    }
                    drop(appends);
                    lock(&samples).push((now, worst));
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Sampler {
            samples,
            sampling,
            handle,
        }
    }

    /// Stops sampling; the samples, oldest first.
    pub fn stop(self) -> Vec<(Instant, Duration)> {
        self.sampling.store(false, Ordering::Release);
        let _ = self.handle.join();
        let samples = lock(&self.samples).clone();
        samples
    }
}

/// The value at quantile `q` of `sorted`.
pub(super) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// fraud-v1's reference alerts for `events` events, sorted.
pub(super) fn expected_alerts(events: u64) -> Vec<(u64, u64, u64)> {
    let mut r: Vec<(u64, u64, u64)> = fraud_v1::alerts(events)
        .into_iter()
        .map(|(t, c, s)| (t, c, s.to_bits()))
        .collect();
    r.sort_unstable();
    r
}
