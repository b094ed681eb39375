//! The source thread: reads the input and hands it to the [`Cutter`].
//!
//! Byte sources (a file, standard input, a buffer or a channel of arrivals
//! from the embedding program) are cut as they are read, their position
//! being the record count. Connector sources (the log and brokers) are
//! polled for up to `batch_rows` records at a time; each run of
//! consecutive offsets of one partition becomes one batch, whose records'
//! positions are `partition << 40 | offset`, and barriers go between
//! polls at the place the connector reports.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use weir_config::{Pipeline, SourceKind};
use weir_connect::{Polled, Received, SourceConnector};

use super::cutter::{Barriers, Cutter};
use super::messages::Work;
use super::operators::Counters;
use super::stop::Ended;
use super::{Arrival, Input};
use crate::checkpointing::{Restore, SourcePosition};
use crate::EngineError;

/// Bits of a record's position holding its offset; the partition number
/// goes above them, so positions are unique across partitions.
pub(crate) const OFFSET_BITS: u32 = 40;

/// A byte source, opened before anything else is touched: a run whose
/// input cannot be opened fails before any sink is truncated.
pub(crate) enum ByteSource {
    /// An in-memory buffer of framed records.
    Bytes(Arc<Vec<u8>>),
    /// Arrivals from the embedding program, until the channel closes.
    Arrivals(Receiver<Arrival>),
    /// A file, read to its end.
    File(std::fs::File, PathBuf),
    /// Standard input, read to its end.
    Stdin,
}

impl ByteSource {
    /// Opens what `input` (or, for [`Input::Configured`], the pipeline
    /// file) says the source reads.
    pub fn open(p: &Pipeline, input: Input) -> Result<ByteSource, EngineError> {
        Ok(match input {
            Input::Bytes(data) => ByteSource::Bytes(data),
            Input::Stream(rx) => ByteSource::Arrivals(rx),
            Input::Configured | Input::Connector(_) => match &p.source.kind {
                SourceKind::File { path } => {
                    let file = std::fs::File::open(path).map_err(|e| {
                        EngineError::io(
                            format!("source {}: cannot open {}", p.source.name, path.display()),
                            e,
                        )
                    })?;
                    ByteSource::File(file, path.clone())
                }
                SourceKind::Stdin => ByteSource::Stdin,
                SourceKind::Memory => {
                    return Err(EngineError::build(&p.source.name, "a memory source needs its input supplied by the embedding program (weir bench, tests or the Rust API)"));
                }
                _ => {
                    return Err(EngineError::invariant(
                        format!("source {}", p.source.name),
                        "a connector source is read through its connector",
                    ))
                }
            },
        })
    }
}

/// Reads a byte source to its end (or until a stop is requested), cutting
/// micro-batches and dealing them to workers; the final barrier carries
/// the record count.
pub(crate) fn read_bytes(
    p: &Pipeline,
    input: ByteSource,
    mut cutter: Cutter,
    counters: &Counters,
) -> Result<Ended, EngineError> {
    match input {
        ByteSource::Bytes(data) => {
            cutter.cut(data, true, None);
        }
        ByteSource::Arrivals(rx) => read_arrivals(&rx, &mut cutter),
        ByteSource::File(file, path) => read_stream(file, &mut cutter, &p.source.name, &path)?,
        ByteSource::Stdin => read_stream(
            std::io::stdin().lock(),
            &mut cutter,
            &p.source.name,
            Path::new("<stdin>"),
        )?,
    }
    counters.source.store(cutter.sent, Ordering::Relaxed);
    let ended = if cutter.stopped() {
        Ended::Abandoned
    } else if cutter.stop_requested() {
        Ended::Stopped
    } else {
        Ended::Input
    };
    cutter.final_barrier(SourcePosition::Records(cutter.position), ended);
    Ok(ended)
}

/// The cutter of a byte source, whose position is the record count: it
/// places barriers itself and passes over the `skip` records a restored
/// checkpoint covers.
pub(crate) fn byte_cutter(
    p: &Pipeline,
    txs: Vec<Sender<Work>>,
    barriers: Option<Barriers>,
    restore: &Restore,
    counters: &Counters,
) -> Cutter {
    let skip = match &restore.source {
        SourcePosition::Records(n) => *n,
        _ => 0,
    };
    Cutter::new(
        txs,
        p.source.record_framing(),
        p.settings.batch_rows,
        barriers,
        true,
        skip,
        counters.metrics.clone(),
    )
}

/// The cutter of a connector source, which says where it stands.
pub(crate) fn connector_cutter(
    p: &Pipeline,
    txs: Vec<Sender<Work>>,
    barriers: Option<Barriers>,
    counters: &Counters,
) -> Cutter {
    Cutter::new(
        txs,
        weir_config::Framing::LengthDelimited,
        p.settings.batch_rows,
        barriers,
        false,
        0,
        counters.metrics.clone(),
    )
}

/// Arrivals from the embedding program, until the channel closes or a
/// stop is requested.
fn read_arrivals(rx: &Receiver<Arrival>, cutter: &mut Cutter) {
    // Wake up for barriers and stop requests while no input arrives.
    let wait = cutter
        .barriers
        .as_ref()
        .map_or(IDLE_WAKE, |b| b.interval.min(IDLE_WAKE));
    loop {
        if cutter.stop_requested() {
            return;
        }
        let first = match rx.recv_timeout(wait) {
            Ok(a) => a,
            Err(RecvTimeoutError::Timeout) => {
                cutter.maybe_barrier(None);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let created = first.created;
        let mut records = first.records;
        let mut bytes = first.bytes;
        // Natural batching: take whatever else has arrived, up to the
        // bound, without waiting.
        while records < cutter.batch_rows {
            match rx.try_recv() {
                Ok(more) => {
                    records += more.records;
                    bytes.extend_from_slice(&more.bytes);
                }
                Err(_) => break,
            }
        }
        if !cutter.cut(Arc::new(bytes), true, Some(created)) {
            return;
        }
    }
}

/// How long an idle source waits before looking at barriers and stop
/// requests again.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// Reads a file or standard input in blocks, carrying a record cut by a
/// block's end over to the next block.
fn read_stream(
    mut r: impl Read,
    cutter: &mut Cutter,
    source: &str,
    path: &Path,
) -> Result<(), EngineError> {
    const BLOCK: usize = 4 << 20;
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(BLOCK + carry.len());
        buf.append(&mut carry);
        let have = buf.len();
        buf.resize(have + BLOCK, 0);
        let n = loop {
            match r.read(&mut buf[have..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(EngineError::io(
                        format!("source {source}: cannot read {}", path.display()),
                        e,
                    ))
                }
            }
        };
        buf.truncate(have + n);
        let at_end = n == 0;
        let data = Arc::new(buf);
        let used = cutter.cut_partial(data.clone(), at_end);
        if used < data.len() {
            carry.extend_from_slice(&data[used..]);
        }
        if at_end || cutter.stopped() || cutter.stop_requested() {
            return Ok(());
        }
    }
}

/// Reads a connector source until it ends (drained), a stop is requested
/// or the workers stop. Records are cut into chunks of consecutive offsets
/// within a partition (a chunk's positions are consecutive); barriers go
/// between polls, at the place the connector reports.
pub(crate) fn read_connector(
    mut conn: Box<dyn SourceConnector>,
    p: &Pipeline,
    mut cutter: Cutter,
    counters: &Counters,
) -> Result<Ended, EngineError> {
    // Wake up for barriers and stop requests while nothing arrives.
    let wait = cutter
        .barriers
        .as_ref()
        .map_or(IDLE_WAKE, |b| b.interval.min(IDLE_WAKE));
    let lag = counters.metrics.as_ref().and_then(|m| m.source_lag.clone());
    if let Some(lag) = &lag {
        lag.publish(&conn.position());
    }
    let mut received = Received::default();
    let mut buf: Vec<u8> = Vec::new();
    let ended = loop {
        if cutter.stop_requested() {
            break Ended::Stopped;
        }
        received.clear();
        let polled = conn
            .poll(&mut received, cutter.batch_rows, wait)
            .map_err(|e| EngineError::source(&p.source.name, e))?;
        if !send_received(&received, &mut cutter, &mut buf) {
            return Ok(Ended::Abandoned);
        }
        counters.source.store(cutter.sent, Ordering::Relaxed);
        if let (Some(lag), false) = (&lag, received.is_empty()) {
            lag.publish(&conn.position());
        }
        if polled == Polled::End {
            break Ended::Input;
        }
        if cutter.stopped() {
            return Ok(Ended::Abandoned);
        }
        cutter.maybe_barrier(Some(SourcePosition::Offsets(conn.position())));
    };
    counters.source.store(cutter.sent, Ordering::Relaxed);
    cutter.final_barrier(SourcePosition::Offsets(conn.position()), ended);
    Ok(ended)
}

/// Cuts what one poll received: each run of consecutive offsets of one
/// partition becomes one chunk. False when the workers are gone.
fn send_received(received: &Received, cutter: &mut Cutter, buf: &mut Vec<u8>) -> bool {
    let mut run: Option<(u32, u64, u64)> = None; // partition, first, next
    buf.clear();
    for (r, payload) in received.iter() {
        let continues = matches!(run, Some((p, _, next)) if p == r.partition && next == r.offset);
        if !continues {
            if let Some((p, first, _)) = run.take() {
                if !send_run(cutter, buf, p, first) {
                    return false;
                }
            }
            run = Some((r.partition, r.offset, r.offset));
        }
        if let Some(run) = &mut run {
            run.2 = r.offset + 1;
        }
        crate::frame::put_varint(buf, payload.len() as u64);
        buf.extend_from_slice(payload);
    }
    match run {
        Some((p, first, _)) => send_run(cutter, buf, p, first),
        None => true,
    }
}

/// Sends one run of consecutive records of a partition, framed in `buf`;
/// false when the workers are gone.
fn send_run(cutter: &mut Cutter, buf: &mut Vec<u8>, partition: u32, first: u64) -> bool {
    cutter.position = ((partition as u64) << OFFSET_BITS) | first;
    cutter.cut(Arc::new(std::mem::take(buf)), true, None)
}
