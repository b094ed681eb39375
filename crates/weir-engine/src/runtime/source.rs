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
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};
use weir_config::{Pipeline, SourceKind};
use weir_connect::{Polled, Received, SourceConnector};

use super::cutter::{Barriers, Cutter};
use super::messages::Work;
use super::operators::Counters;
use super::Input;
use crate::checkpointing::{Restore, SourcePosition};
use crate::EngineError;

/// Bits of a record's position holding its offset; the partition number
/// goes above them, so positions are unique across partitions.
pub(crate) const OFFSET_BITS: u32 = 40;

/// Reads a byte source to its end, cutting micro-batches and dealing them
/// to workers; the final barrier carries the record count.
pub(crate) fn read_bytes(
    p: &Pipeline,
    input: Input,
    txs: Vec<Sender<Work>>,
    barriers: Option<Barriers>,
    restore: &Restore,
    counters: &Counters,
) -> Result<(), EngineError> {
    let skip = match &restore.source {
        SourcePosition::Records(n) => *n,
        _ => 0,
    };
    let mut cutter = Cutter::new(
        txs,
        p.source.record_framing(),
        p.settings.batch_rows,
        barriers,
        true,
        skip,
        counters.metrics.clone(),
    );
    match input {
        Input::Bytes(data) => {
            cutter.cut(data, true, None);
        }
        Input::Stream(rx) => read_arrivals(&rx, &mut cutter),
        Input::Configured => match &p.source.kind {
            SourceKind::File { path } => {
                let file = std::fs::File::open(path).map_err(|e| {
                    EngineError::io(
                        format!("source {}: cannot open {}", p.source.name, path.display()),
                        e,
                    )
                })?;
                read_stream(file, &mut cutter, &p.source.name, path)?;
            }
            SourceKind::Stdin => read_stream(
                std::io::stdin().lock(),
                &mut cutter,
                &p.source.name,
                Path::new("<stdin>"),
            )?,
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
    }
    counters.source.store(cutter.sent, Ordering::Relaxed);
    let position = SourcePosition::Records(cutter.position);
    cutter.final_barrier(position);
    Ok(())
}

/// Arrivals from the embedding program, until the channel closes.
fn read_arrivals(rx: &crossbeam_channel::Receiver<super::Arrival>, cutter: &mut Cutter) {
    loop {
        let first = match cutter.barriers.as_ref() {
            // Wake up for barriers while no input arrives.
            Some(b) => match rx.recv_timeout(b.interval) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => {
                    cutter.maybe_barrier(None);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(a) => a,
                Err(_) => return,
            },
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
        if at_end || cutter.stopped() {
            return Ok(());
        }
    }
}

/// Reads a connector source until it ends (drained) or the workers stop.
/// Records are cut into chunks of consecutive offsets within a partition
/// (a chunk's positions are consecutive); barriers go between polls, at
/// the place the connector reports.
pub(crate) fn read_connector(
    mut conn: Box<dyn SourceConnector>,
    p: &Pipeline,
    txs: Vec<Sender<Work>>,
    barriers: Option<Barriers>,
    counters: &Counters,
) -> Result<(), EngineError> {
    let mut cutter = Cutter::new(
        txs,
        weir_config::Framing::LengthDelimited,
        p.settings.batch_rows,
        barriers,
        false,
        0,
        counters.metrics.clone(),
    );
    // Wake up for barriers while nothing arrives.
    let wait = cutter
        .barriers
        .as_ref()
        .map_or(Duration::from_millis(100), |b| {
            b.interval.min(Duration::from_millis(100))
        });
    let lag = counters.metrics.as_ref().and_then(|m| m.source_lag.clone());
    if let Some(lag) = &lag {
        lag.publish(&conn.position());
    }
    let mut received = Received::default();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        received.clear();
        let polled = conn
            .poll(&mut received, cutter.batch_rows, wait)
            .map_err(|e| EngineError::source(&p.source.name, e))?;
        if !send_received(&received, &mut cutter, &mut buf) {
            return Ok(());
        }
        counters.source.store(cutter.sent, Ordering::Relaxed);
        if let (Some(lag), false) = (&lag, received.is_empty()) {
            lag.publish(&conn.position());
        }
        if polled == Polled::End {
            break;
        }
        if cutter.stopped() {
            return Ok(());
        }
        cutter.maybe_barrier(Some(SourcePosition::Offsets(conn.position())));
    }
    counters.source.store(cutter.sent, Ordering::Relaxed);
    cutter.final_barrier(SourcePosition::Offsets(conn.position()));
    Ok(())
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
