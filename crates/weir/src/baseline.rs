//! `weir bench fraud-v1 --baseline`: fraud-v1 as a hand-written,
//! single-purpose program that uses every core.
//!
//! This is a yardstick, not part of the engine. It is what a competent
//! engineer would write by hand for exactly this one job on `N` cores
//! (`N` = `--shards`, default one per core): split lines with `memchr`,
//! parse each line into a struct with `serde_json` (or decode the Protobuf
//! varints by hand), keep a `VecDeque` window per card, compute the five
//! features and the logistic-regression score inline, and write alerts as
//! JSON lines. It runs over the same pre-encoded input bytes as the
//! engine's throughput benchmark, and its alerts file is read back and
//! checksummed the same way, so the two closing lines compare the engine's
//! cost (generality, batching, expressions, model runtime) against no
//! engine at all, with the same cores at the disposal of both.
//!
//! The threads: the calling thread cuts the input into chunks of about
//! [`CHUNK_BYTES`] at record boundaries (a `memchr` per chunk for JSON, a
//! walk over the length prefixes for Protobuf) and deals chunk `k` to
//! parser `k % N`. A parser parses its chunk and sends each of the `N`
//! scoring threads exactly one batch per chunk (possibly empty): the
//! chunk's transactions whose `card_id % N` is that thread's. A scoring
//! thread reads chunk `k`'s batch from parser `k % N`, round-robin, so it
//! sees each of its cards' transactions in input order, and scores them
//! against its own cards' windows: nothing is shared, no locks. Batches,
//! not single events, cross the bounded channels. The alert lines are the
//! single-threaded program's, one scoring thread's after another's.
//!
//! The pipeline logic is fixed here (it mirrors `fraud-v1.md` and the
//! reference scorer in `weir_workloads::fraud_v1`); nothing here is used by
//! `weir run`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Deserialize;
use weir_workloads::fraud_v1::{BIAS, THRESHOLD, WEIGHTS, WINDOW_MS};

use crate::bench::Format;

/// What a baseline run did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Input records parsed (kept or not), as the engine's source count.
    pub events: u64,
    /// Start of parsing to the alerts file written and synced.
    pub elapsed: Duration,
}

/// One event as JSON. Every field is decoded, as the engine decodes every
/// field its pipeline declares, even those the scoring does not read.
#[derive(Deserialize)]
#[allow(dead_code)] // merchant_id and country: decoded for parity only
struct Txn<'a> {
    txn_id: u64,
    card_id: u64,
    merchant_id: u32,
    amount_cents: i64,
    #[serde(borrow)]
    country: Cow<'a, str>,
    ts: i64,
}

/// The fields the scoring reads.
#[derive(Clone, Copy)]
struct Event {
    txn_id: u64,
    card_id: u64,
    amount_cents: i64,
    ts: i64,
}

/// Cheap hasher for integer card ids (SplitMix64's finaliser).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// The per-card windows and the alerts written so far.
struct Scorer {
    windows: HashMap<u64, VecDeque<(i64, i64)>, BuildHasherDefault<MixHasher>>,
    out: Vec<u8>,
}

impl Scorer {
    fn new() -> Self {
        Scorer {
            windows: HashMap::default(),
            out: Vec::with_capacity(1 << 20),
        }
    }

    #[inline]
    fn push(&mut self, e: Event) {
        if e.amount_cents <= 0 {
            return;
        }
        let w = self.windows.entry(e.card_id).or_default();
        w.push_back((e.ts, e.amount_cents));
        while let Some(&(ts, _)) = w.front() {
            if ts <= e.ts - WINDOW_MS {
                w.pop_front();
            } else {
                break;
            }
        }
        let count = w.len() as i64;
        let mut sum = 0i64;
        let mut max = i64::MIN;
        for &(_, a) in w.iter() {
            sum += a;
            max = max.max(a);
        }
        let amount = e.amount_cents;
        let x = [
            amount as f64 / 10_000.0,
            count as f64,
            sum as f64 / 100_000.0,
            max as f64 / 10_000.0,
            amount as f64 / (sum as f64 / count as f64),
        ];
        let mut z = BIAS;
        for (xi, wi) in x.iter().zip(WEIGHTS.iter()) {
            z += xi * wi;
        }
        let p = 1.0 / (1.0 + (-z).exp());
        if p > THRESHOLD {
            // Writing to a Vec cannot fail. `{p:?}` is the shortest
            // round-trip form, as the engine's JSON sink writes floats.
            let _ = writeln!(
                self.out,
                "{{\"txn_id\":{},\"card_id\":{},\"score\":{p:?}}}",
                e.txn_id, e.card_id
            );
        }
    }
}

/// About how much input one parser takes at a time: large enough that a
/// chunk's batches amortise the channels, small enough that the parsers
/// start at once and stay in step.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// Runs the baseline over `data` (encoded as `format`) on `threads`
/// parsers and as many scoring threads, and writes the alerts to
/// `alerts_path`; the time covers parsing through the file being written
/// and synced, like the engine's run ending with its sink's flush.
pub fn run(
    format: Format,
    data: &[u8],
    alerts_path: &Path,
    threads: usize,
) -> anyhow::Result<Outcome> {
    run_chunked(format, data, alerts_path, threads, CHUNK_BYTES)
}

fn run_chunked(
    format: Format,
    data: &[u8],
    alerts_path: &Path,
    threads: usize,
    chunk_bytes: usize,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (outs, events) = parallel(format, data, threads.max(1), chunk_bytes.max(1))?;
    if let Some(dir) = alerts_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let mut file = std::fs::File::create(alerts_path)
        .with_context(|| format!("cannot create {}", alerts_path.display()))?;
    outs.iter()
        .try_for_each(|out| file.write_all(out))
        .and_then(|_| file.sync_data())
        .with_context(|| format!("cannot write {}", alerts_path.display()))?;
    Ok(Outcome {
        events,
        elapsed: started.elapsed(),
    })
}

/// The parsers' and scoring threads' work: each scoring thread's alert
/// lines, and the number of records parsed.
fn parallel(
    format: Format,
    data: &[u8],
    n: usize,
    chunk_bytes: usize,
) -> anyhow::Result<(Vec<Vec<u8>>, u64)> {
    std::thread::scope(|scope| {
        // to_shard[p][s]: parser p to scoring thread s; from_parser[s][p]
        // its other end.
        let mut to_shard: Vec<Vec<Sender<Vec<Event>>>> = (0..n).map(|_| Vec::new()).collect();
        let mut from_parser: Vec<Vec<Receiver<Vec<Event>>>> = (0..n).map(|_| Vec::new()).collect();
        for txs in to_shard.iter_mut() {
            for rxs in from_parser.iter_mut() {
                let (tx, rx) = bounded(8);
                txs.push(tx);
                rxs.push(rx);
            }
        }
        let mut chunks = Vec::new();
        let mut parsers = Vec::new();
        for txs in to_shard {
            let (tx, rx) = bounded::<Range<usize>>(4);
            chunks.push(tx);
            parsers.push(scope.spawn(move || parse_chunks(format, data, rx, txs)));
        }
        let shards: Vec<_> = from_parser
            .into_iter()
            .map(|rxs| scope.spawn(move || score(rxs)))
            .collect();
        let mut k = 0;
        let cut = cut(format, data, chunk_bytes, |range| {
            // A parser that stopped (bad input) says why when joined.
            let sent = chunks[k % n].send(range).is_ok();
            k += 1;
            sent
        });
        drop(chunks);
        let mut events = 0u64;
        let mut failed: Option<anyhow::Error> = None;
        for h in parsers {
            match h.join() {
                Ok(Ok(n)) => events += n,
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(_) => bail!("a baseline parser panicked"),
            }
        }
        let mut outs = Vec::new();
        for h in shards {
            outs.push(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a baseline scoring thread panicked"))?,
            );
        }
        cut?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((outs, events))
    })
}

/// Cuts `data` into chunks of whole records of about `chunk_bytes` each
/// and hands them to `deal` in order, until it returns false.
fn cut(
    format: Format,
    data: &[u8],
    chunk_bytes: usize,
    mut deal: impl FnMut(Range<usize>) -> bool,
) -> anyhow::Result<()> {
    let mut start = 0;
    match format {
        Format::Json => {
            while start < data.len() {
                let from = (start + chunk_bytes).min(data.len()) - 1;
                let end = memchr::memchr(b'\n', &data[from..]).map_or(data.len(), |i| from + i + 1);
                if !deal(start..end) {
                    return Ok(());
                }
                start = end;
            }
        }
        Format::Protobuf => {
            let mut events = 0u64;
            let mut pos = 0;
            while pos < data.len() {
                let len = varint(data, &mut pos).with_context(|| format!("event {events}"))?;
                pos = pos
                    .checked_add(len as usize)
                    .filter(|&end| end <= data.len())
                    .with_context(|| format!("event {events}: truncated message"))?;
                events += 1;
                if pos - start >= chunk_bytes || pos == data.len() {
                    if !deal(start..pos) {
                        return Ok(());
                    }
                    start = pos;
                }
            }
        }
    }
    Ok(())
}

/// A parser: parses each chunk it is dealt and sends every scoring thread
/// that chunk's transactions of its cards (one batch per chunk, possibly
/// empty); returns the records parsed.
fn parse_chunks(
    format: Format,
    data: &[u8],
    chunks: Receiver<Range<usize>>,
    shards: Vec<Sender<Vec<Event>>>,
) -> anyhow::Result<u64> {
    let n = shards.len() as u64;
    let mut events = 0u64;
    for range in chunks {
        let at = range.start;
        let chunk = &data[range];
        let guess = chunk.len() / 40 / shards.len() + 16;
        let mut batches: Vec<Vec<Event>> = (0..shards.len())
            .map(|_| Vec::with_capacity(guess))
            .collect();
        let mut route = |e: Event| {
            // Transactions the scoring skips need not travel.
            if e.amount_cents > 0 {
                batches[(e.card_id % n) as usize].push(e);
            }
        };
        events += match format {
            Format::Json => json(chunk, &mut route),
            Format::Protobuf => protobuf(chunk, &mut route),
        }
        .with_context(|| format!("in the chunk at byte {at}"))?;
        for (tx, batch) in shards.iter().zip(batches) {
            if tx.send(batch).is_err() {
                bail!("a baseline scoring thread stopped");
            }
        }
    }
    Ok(events)
}

/// A scoring thread: reads chunk `k`'s batch from parser `k % N` until
/// the parser of the next chunk has no more; returns its alert lines.
fn score(parsers: Vec<Receiver<Vec<Event>>>) -> Vec<u8> {
    let mut scorer = Scorer::new();
    loop {
        for rx in &parsers {
            let Ok(batch) = rx.recv() else {
                return scorer.out;
            };
            for e in batch {
                scorer.push(e);
            }
        }
    }
}

/// Parses JSON lines, handing each transaction to `each`; returns how
/// many records there were.
fn json(data: &[u8], each: &mut impl FnMut(Event)) -> anyhow::Result<u64> {
    let mut events = 0u64;
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let line = &data[start..end];
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        let t: Txn<'_> = serde_json::from_slice(line)
            .with_context(|| format!("event {events}: malformed JSON"))?;
        events += 1;
        each(Event {
            txn_id: t.txn_id,
            card_id: t.card_id,
            amount_cents: t.amount_cents,
            ts: t.ts,
        });
    }
    Ok(events)
}

/// Reads a varint at `*pos`, advancing it.
#[inline]
fn varint(buf: &[u8], pos: &mut usize) -> anyhow::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            bail!("truncated varint");
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    bail!("varint longer than 10 bytes")
}

/// Decodes one `Transaction` message (examples/fraud/transaction.proto);
/// absent fields take proto3's zero defaults, unknown fields are skipped.
fn message(msg: &[u8]) -> anyhow::Result<Event> {
    let mut e = Event {
        txn_id: 0,
        card_id: 0,
        amount_cents: 0,
        ts: 0,
    };
    let mut pos = 0;
    while pos < msg.len() {
        let key = varint(msg, &mut pos)?;
        match (key >> 3, key & 7) {
            (1, 0) => e.txn_id = varint(msg, &mut pos)?,
            (2, 0) => e.card_id = varint(msg, &mut pos)?,
            (3, 0) => {
                let merchant = varint(msg, &mut pos)?;
                if u32::try_from(merchant).is_err() {
                    bail!("merchant_id {merchant} out of range");
                }
            }
            (4, 0) => e.amount_cents = varint(msg, &mut pos)? as i64,
            (5, 2) => {
                let len = varint(msg, &mut pos)? as usize;
                let country = pos
                    .checked_add(len)
                    .and_then(|end| msg.get(pos..end))
                    .context("truncated country")?;
                std::str::from_utf8(country).context("country is not UTF-8")?;
                pos += len;
            }
            (6, 0) => e.ts = varint(msg, &mut pos)? as i64,
            (_, 0) => {
                varint(msg, &mut pos)?;
            }
            (_, 1) => pos = pos.saturating_add(8),
            (_, 2) => pos = pos.saturating_add(varint(msg, &mut pos)? as usize),
            (_, 5) => pos = pos.saturating_add(4),
            (field, wire) => bail!("field {field}: unsupported wire type {wire}"),
        }
    }
    if pos != msg.len() {
        bail!("truncated field");
    }
    Ok(e)
}

/// Parses length-delimited Protobuf messages, handing each transaction
/// to `each`; returns how many records there were.
fn protobuf(data: &[u8], each: &mut impl FnMut(Event)) -> anyhow::Result<u64> {
    let mut events = 0u64;
    let mut pos = 0;
    while pos < data.len() {
        let len = varint(data, &mut pos).with_context(|| format!("event {events}"))? as usize;
        let msg = pos
            .checked_add(len)
            .and_then(|end| data.get(pos..end))
            .with_context(|| format!("event {events}: truncated message"))?;
        pos += len;
        let e = message(msg).with_context(|| format!("event {events}"))?;
        events += 1;
        each(e);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_workloads::fraud_v1;

    /// The whole input parsed and scored on this thread, in input order.
    fn inline(format: Format, data: &[u8]) -> (u64, Vec<u8>) {
        let mut scorer = Scorer::new();
        let mut push = |e| scorer.push(e);
        let events = match format {
            Format::Json => json(data, &mut push).expect("json"),
            Format::Protobuf => protobuf(data, &mut push).expect("protobuf"),
        };
        (events, scorer.out)
    }

    /// Alerts and checksum of JSON alert lines.
    fn tally(out: &[u8]) -> (u64, u64) {
        let text = std::str::from_utf8(out).expect("utf-8");
        let mut n = 0;
        let mut sum = 0u64;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            n += 1;
            sum = sum.wrapping_add(v["txn_id"].as_u64().expect("txn_id"));
        }
        (n, sum)
    }

    fn sorted_lines(out: &[u8]) -> Vec<&[u8]> {
        let mut lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn matches_the_reference_in_both_formats() {
        let n = 50_000;
        let r = fraud_v1::score(n);
        for (format, data) in [
            (Format::Json, fraud_v1::encode_json(n)),
            (Format::Protobuf, fraud_v1::encode_protobuf(n)),
        ] {
            let (events, out) = inline(format, &data);
            assert_eq!((events, tally(&out)), (n, (r.alerts, r.checksum)));
        }
    }

    /// Two (or three) parsers and scoring threads write the same alert
    /// lines as one thread doing everything in input order, in both
    /// formats, with chunks small enough that every parser has many.
    #[test]
    fn threads_write_the_one_thread_alerts() {
        let n = 200_000;
        let r = fraud_v1::score(n);
        for (format, data) in [
            (Format::Json, fraud_v1::encode_json(n)),
            (Format::Protobuf, fraud_v1::encode_protobuf(n)),
        ] {
            let (events, one) = inline(format, &data);
            assert_eq!((events, tally(&one)), (n, (r.alerts, r.checksum)));
            for (threads, chunk) in [(1, CHUNK_BYTES), (2, CHUNK_BYTES), (2, 4096), (3, 1000)] {
                let (outs, events) = parallel(format, &data, threads, chunk).expect("run");
                assert_eq!(outs.len(), threads);
                let all = outs.concat();
                assert_eq!(events, n, "{format:?} on {threads} threads");
                assert_eq!(
                    sorted_lines(&all),
                    sorted_lines(&one),
                    "{format:?} on {threads} threads, chunks of {chunk} bytes"
                );
            }
        }
    }

    #[test]
    fn run_writes_the_alerts_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out/alerts.jsonl");
        let data = fraud_v1::encode_json(20_000);
        let outcome = run(Format::Json, &data, &path, 2).expect("run");
        assert_eq!(outcome.events, 20_000);
        let r = fraud_v1::score(20_000);
        let written = std::fs::read(&path).expect("alerts");
        assert_eq!(tally(&written), (r.alerts, r.checksum));
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut s = Scorer::new();
        let mut push = |e| s.push(e);
        assert!(json(b"{\"txn_id\": oops}\n", &mut push).is_err());
        assert!(protobuf(&[5, 8, 1], &mut push).is_err());
        assert!(protobuf(&[2, 8, 0x80], &mut push).is_err());
        // And through the threads: the cut or a parser says so.
        for threads in [1, 2] {
            let good = fraud_v1::encode_json(1000);
            let mut bad = good.clone();
            bad.extend_from_slice(b"{\"txn_id\": oops}\n");
            bad.extend_from_slice(&good);
            assert!(parallel(Format::Json, &bad, threads, 512).is_err());
            assert!(parallel(Format::Protobuf, &[5, 8, 1], threads, 512).is_err());
            assert!(parallel(Format::Protobuf, &[2, 8, 0x80], threads, 512).is_err());
        }
    }
}
