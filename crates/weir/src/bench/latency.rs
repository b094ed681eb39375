//! Latency mode of `weir bench` (`--rate`): events fed at a fixed rate,
//! the latency of every output record measured at steady state.
//!
//! What is measured: for each alert, the time from its own event's
//! creation (when the feeder made it, just before handing it to the
//! engine) to the moment the sink thread wrote the batch holding it. For
//! the pipeline's file sink under checkpoints "written" means staged: the
//! output becomes visible when the checkpoint covering it commits, about
//! one checkpoint interval later, and that deliberate delay is not in the
//! figures. `--sink discard` replaces the alerts' file sink by a discard
//! sink, whose output is "visible" as soon as it is written, so a run with
//! `--checkpoint-interval` and `--sink discard` measures what taking
//! checkpoints costs the data path, apart from the transactional sink.
//!
//! How: the feeder stamps each event's creation, in microseconds since the
//! run's origin, into a ring of 2^21 slots indexed by `txn_id` (the
//! feeder's sequence number; each slot also keeps the high bits of the id,
//! so a slot overwritten by a later event is recognised). The ring is
//! 16 MB whatever the run's length; a record whose slot was overwritten
//! (its latency longer than 2^21 events take to feed) is counted as
//! `unmeasured`, never mis-measured. The engine hands every batch its
//! sinks write to a [`SinkProbe`]; this one reads the batch's `txn_id`
//! column, looks each record's creation up, and records `now - created`
//! in an HdrHistogram for records created after the warm-up (`--warmup`,
//! default one fraud-v1 window, 60 s: by then windows are full and
//! evicting, so the figures are those of the steady state). Alerts and
//! their checksum count every record, warm-up included; with the
//! pipeline's sink they are also checked against its file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use weir_config::{CheckpointSettings, Pipeline, SinkKind};
use weir_engine::arrow_array::types::UInt64Type;
use weir_engine::arrow_array::{Array, ArrowPrimitiveType, RecordBatch, UInt64Array};
use weir_engine::{Arrival, Input, RunOptions, SinkProbe};
use weir_workloads::fraud_v1;

use super::{read_alerts, BenchArgs, Format, SinkChoice};

/// The default warm-up: one fraud-v1 window.
const DEFAULT_WARMUP_S: u64 = (fraud_v1::WINDOW_MS / 1000) as u64;

/// The column that identifies each alert's event.
const ID_COLUMN: &str = "txn_id";

/// Slots of the creation-time ring: 2^21 (16 MB of `AtomicU64`).
const RING_BITS: u32 = 21;
const RING_SLOTS: usize = 1 << RING_BITS;
/// A slot: bit 63 set once written, bits 40..63 the id's bits above
/// `RING_BITS` (mod 2^23), bits 0..40 microseconds since the origin
/// (2^40 µs is about 12 days).
const MICROS_BITS: u32 = 40;
const MICROS_MASK: u64 = (1 << MICROS_BITS) - 1;
const TAG_MASK: u64 = (1 << (63 - MICROS_BITS)) - 1;
const FILLED: u64 = 1 << 63;

/// Each event's creation time, by `txn_id`, in a fixed-size ring.
struct Created {
    slots: Box<[AtomicU64]>,
}

impl Created {
    fn new() -> Self {
        Created {
            slots: (0..RING_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn slot(id: u64) -> usize {
        (id as usize) & (RING_SLOTS - 1)
    }

    fn tag(id: u64) -> u64 {
        (id >> RING_BITS) & TAG_MASK
    }

    /// Event `id` was created `us` microseconds after the origin.
    fn set(&self, id: u64, us: u64) {
        let v = FILLED | (Self::tag(id) << MICROS_BITS) | us.min(MICROS_MASK);
        // Relaxed: the event reaches the sink thread through channels
        // (feeder, source, worker, shard, sink), which order this store
        // before the probe's load.
        self.slots[Self::slot(id)].store(v, Ordering::Relaxed);
    }

    /// When event `id` was created; `None` if its slot now holds another
    /// event's (or none).
    fn get(&self, id: u64) -> Option<u64> {
        let v = self.slots[Self::slot(id)].load(Ordering::Relaxed);
        let tag = (v >> MICROS_BITS) & TAG_MASK;
        (v & FILLED != 0 && tag == Self::tag(id)).then_some(v & MICROS_MASK)
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// What the probe counted.
struct Tally {
    /// Latencies in µs of the records created after the warm-up.
    hist: Histogram<u64>,
    /// Every record the alerts' sink wrote, and the sum of their ids.
    alerts: u64,
    checksum: u64,
    /// Records after the warm-up whose creation slot had been overwritten.
    unmeasured: u64,
    /// Records without an id (a null `txn_id`).
    without_id: u64,
}

/// The probe the engine calls after each batch a sink writes.
struct Probe {
    /// The alerts' sink; others are not counted.
    sink: String,
    origin: Instant,
    /// Records created before this (µs since the origin) are warm-up.
    warmup_us: u64,
    created: Arc<Created>,
    tally: Mutex<Tally>,
}

impl SinkProbe for Probe {
    fn written(&self, sink: &str, batch: &RecordBatch) {
        if sink != self.sink || batch.num_rows() == 0 {
            return;
        }
        // Every record of the batch was written now.
        let now = micros(self.origin.elapsed());
        let ids = batch
            .column_by_name(ID_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>());
        let mut t = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ids) = ids else {
            t.without_id += batch.num_rows() as u64;
            return;
        };
        for id in ids.iter() {
            let Some(id) = id else {
                t.without_id += 1;
                continue;
            };
            t.alerts += 1;
            t.checksum = t.checksum.wrapping_add(id);
            match self.created.get(id) {
                Some(created) if created >= self.warmup_us => {
                    t.hist.saturating_record(now.saturating_sub(created).max(1));
                }
                Some(_) => {} // warm-up
                None => t.unmeasured += 1,
            }
        }
    }
}

/// A fresh checkpoint directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let path = std::env::temp_dir().join(format!(
                "weir-bench-checkpoints-{}-{nanos}-{attempt}",
                std::process::id()
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create directory {}", path.display()))
                }
            }
        }
        bail!("cannot find a fresh name for a checkpoint directory");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `weir bench --rate RATE`.
pub(super) fn run(
    args: &BenchArgs,
    mut pipeline: Pipeline,
    alerts_path: &Path,
    rate: u64,
) -> anyhow::Result<()> {
    if rate == 0 || args.duration == 0 {
        bail!("--rate and --duration must be positive");
    }
    let warmup = args.warmup.unwrap_or(DEFAULT_WARMUP_S);
    if warmup >= args.duration {
        bail!(
            "--warmup ({warmup} s) must be shorter than --duration ({} s): latency is reported \
             for the records created after the warm-up{}",
            args.duration,
            if args.warmup.is_none() {
                " (by default one 60 s window, so that windows are full)"
            } else {
                ""
            }
        );
    }
    let sink_choice = args.sink.unwrap_or(SinkChoice::Pipeline);
    let sink = pipeline
        .sinks
        .iter_mut()
        .find(|s| matches!(&s.kind, SinkKind::File { path, .. } if path == alerts_path))
        .context("the benchmark pipeline needs a file sink holding the alerts")?;
    match sink.input_schema.field_with_name(ID_COLUMN) {
        Ok(f) if f.data_type() == &<UInt64Type as ArrowPrimitiveType>::DATA_TYPE => {}
        _ => bail!(
            "sink {}: latency mode needs a u64 column {ID_COLUMN} in the alerts",
            sink.name
        ),
    }
    let sink_name = sink.name.clone();
    if sink_choice == SinkChoice::Discard {
        sink.kind = SinkKind::Discard;
    }
    // Checkpoints only when asked for, in a store of this run's own.
    if pipeline.checkpoint.is_some() && args.checkpoint_interval.is_none() {
        eprintln!(
            "note: the pipeline's [checkpoint] is not used; --checkpoint-interval MS runs \
             with checkpoints in a fresh store"
        );
    }
    let store = match args.checkpoint_interval {
        Some(0) => bail!("--checkpoint-interval must be positive"),
        Some(ms) => {
            let dir = TempDir::new()?;
            pipeline.checkpoint = Some(CheckpointSettings {
                dir: dir.0.clone(),
                url: None,
                interval_ms: ms,
                keep: 3,
            });
            Some(dir)
        }
        None => {
            pipeline.checkpoint = None;
            None
        }
    };

    let origin = Instant::now();
    let created = Arc::new(Created::new());
    let probe = Arc::new(Probe {
        sink: sink_name,
        origin,
        warmup_us: warmup * 1_000_000,
        created: created.clone(),
        tally: Mutex::new(Tally {
            // 1 µs to 1 hour at 3 significant figures are valid bounds.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            alerts: 0,
            checksum: 0,
            unmeasured: 0,
            without_id: 0,
        }),
    });
    let (tx, rx) = crossbeam_channel::unbounded::<Arrival>();
    let total = rate.saturating_mul(args.duration);
    let format = args.format;
    let feeder = std::thread::Builder::new()
        .name("weir-bench-feeder".into())
        .spawn(move || feed(tx, format, rate, total, origin, &created))?;
    let summary = weir_engine::run(
        &pipeline,
        RunOptions {
            shards: args.shards,
            input: Input::Stream(rx),
            sink_probe: Some(probe.clone()),
            ..Default::default()
        },
    );
    let sent = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("feeder thread panicked"))?;
    let summary = summary?;
    drop(store);
    crate::print_summary(&pipeline, &summary);
    let t = probe.tally.lock().unwrap_or_else(|e| e.into_inner());
    if t.without_id > 0 {
        bail!(
            "{} alerts reached the sink without a {ID_COLUMN}",
            t.without_id
        );
    }
    if sink_choice == SinkChoice::Pipeline {
        // After the run every checkpoint has committed: the file holds
        // what the sink was handed.
        let file = read_alerts(alerts_path)?;
        if file != (t.alerts, t.checksum) {
            bail!(
                "the sink was handed {} alerts (checksum {}) but {} holds {} (checksum {})",
                t.alerts,
                t.checksum,
                alerts_path.display(),
                file.0,
                file.1
            );
        }
    }
    if t.unmeasured > 0 {
        eprintln!(
            "warning: {} records after the warm-up had latencies longer than the creation-time \
             ring covers ({RING_SLOTS} events) and are not in the figures",
            t.unmeasured
        );
    }
    let h = &t.hist;
    if h.is_empty() {
        bail!("no record created after the warm-up reached the sink, so no latency was measured");
    }
    let mut line = format!(
        "fraud-v1 mode=latency rate={rate} events={sent} alerts={} checksum={} samples={} \
         p50_us={} p99_us={} p999_us={} max_us={} warmup_s={warmup} duration_s={} sink={} \
         unmeasured={}",
        t.alerts,
        t.checksum,
        h.len(),
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        args.duration,
        match sink_choice {
            SinkChoice::Pipeline => "pipeline",
            SinkChoice::Discard => "discard",
        },
        t.unmeasured,
    );
    if let Some(ms) = args.checkpoint_interval {
        line.push_str(&format!(" checkpoint_interval_ms={ms}"));
        line.push_str(&checkpoint_fields(&summary.checkpoints));
    }
    println!("{line}");
    Ok(())
}

/// The closing line's checkpoint figures: how many completed, their
/// durations and the pipeline's stall for each (median, 99th percentile
/// of the recent ones the report keeps, and longest), and their sizes
/// (median, all of them, and the last: the state at the end of the run).
fn checkpoint_fields(c: &weir_engine::CheckpointReport) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    fn quantile<T: Ord + Copy + Default>(mut v: Vec<T>, q: f64) -> T {
        v.sort_unstable();
        let i = ((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1));
        v.get(i).copied().unwrap_or_default()
    }
    let durations: Vec<Duration> = c.recent.iter().map(|s| s.duration).collect();
    let stalls: Vec<Duration> = c.recent.iter().map(|s| s.stall).collect();
    let sizes: Vec<u64> = c.recent.iter().map(|s| s.size_bytes).collect();
    format!(
        " checkpoints={} checkpoint_median_ms={:.1} checkpoint_max_ms={:.1} \
         checkpoint_stall_median_ms={:.2} checkpoint_stall_p99_ms={:.2} \
         checkpoint_max_stall_ms={:.2} checkpoint_median_bytes={} \
         checkpoint_total_bytes={} checkpoint_last_bytes={}",
        c.completed,
        ms(quantile(durations, 0.5)),
        ms(c.max_duration),
        ms(quantile(stalls.clone(), 0.5)),
        ms(quantile(stalls, 0.99)),
        ms(c.max_stall),
        quantile(sizes, 0.5),
        c.total_bytes,
        c.last.as_ref().map_or(0, |s| s.size_bytes)
    )
}

/// Feeds `total` events at `rate` per second from `origin`, recording
/// each one's creation; returns how many were sent.
fn feed(
    tx: crossbeam_channel::Sender<Arrival>,
    format: Format,
    rate: u64,
    total: u64,
    origin: Instant,
    created: &Created,
) -> u64 {
    let mut generator = fraud_v1::Generator::new();
    let mut sent = 0u64;
    while sent < total {
        let due = ((origin.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            // The generator's txn_id is the sequence number `sent`.
            let t = generator.next_event(sent, now_ms);
            let mut bytes = Vec::with_capacity(128);
            match format {
                Format::Json => fraud_v1::write_json(&t, &mut bytes),
                Format::Protobuf => fraud_v1::write_protobuf_delimited(&t, &mut bytes),
            }
            let now = Instant::now();
            created.set(t.txn_id, micros(now - origin));
            let arrival = Arrival {
                bytes,
                records: 1,
                created: now,
            };
            if tx.send(arrival).is_err() {
                return sent;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_knows_an_overwritten_slot() {
        let ring = Created::new();
        ring.set(5, 123);
        assert_eq!(ring.get(5), Some(123));
        assert_eq!(ring.get(6), None, "never written");
        let later = 5 + RING_SLOTS as u64;
        assert_eq!(ring.get(later), None, "same slot, other id");
        ring.set(later, 456);
        assert_eq!(ring.get(5), None, "overwritten");
        assert_eq!(ring.get(later), Some(456));
        // Ids far beyond the ring and times beyond 40 bits stay apart.
        let far = (1u64 << 30) + 7;
        ring.set(far, u64::MAX);
        assert_eq!(ring.get(far), Some(MICROS_MASK));
        assert_eq!(ring.get(7), None);
    }
}
