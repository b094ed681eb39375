//! `weir bench fraud-v1 --baseline`: fraud-v1 as a hand-written,
//! single-purpose, single-threaded program.
//!
//! This is a yardstick, not part of the engine. It is what a competent
//! engineer would write by hand for exactly this one job: split lines with
//! `memchr`, parse each line into a struct with `serde_json` (or decode the
//! Protobuf varints by hand), keep a `VecDeque` window per card, compute the
//! five features and the logistic-regression score inline, and write alerts
//! as JSON lines. It runs over the same pre-encoded input bytes as the
//! engine's throughput benchmark, and its alerts file is read back and
//! checksummed the same way, so the two closing lines compare the engine's
//! cost (generality, batching, expressions, model runtime, threads) against
//! no engine at all on the same machine.
//!
//! The pipeline logic is fixed here (it mirrors `fraud-v1.md` and the
//! reference scorer in `weir_workloads::fraud_v1`); nothing here is used by
//! `weir run`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
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

/// Runs the baseline over `data` (encoded as `format`) and writes the
/// alerts to `alerts_path`; the time covers parsing through the file being
/// written and synced, like the engine's run ending with its sink's flush.
pub fn run(format: Format, data: &[u8], alerts_path: &Path) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut scorer = Scorer::new();
    let events = match format {
        Format::Json => json(data, &mut scorer)?,
        Format::Protobuf => protobuf(data, &mut scorer)?,
    };
    if let Some(dir) = alerts_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let mut file = std::fs::File::create(alerts_path)
        .with_context(|| format!("cannot create {}", alerts_path.display()))?;
    file.write_all(&scorer.out)
        .and_then(|_| file.sync_data())
        .with_context(|| format!("cannot write {}", alerts_path.display()))?;
    Ok(Outcome {
        events,
        elapsed: started.elapsed(),
    })
}

fn json(data: &[u8], scorer: &mut Scorer) -> anyhow::Result<u64> {
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
        scorer.push(Event {
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

fn protobuf(data: &[u8], scorer: &mut Scorer) -> anyhow::Result<u64> {
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
        scorer.push(e);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_workloads::fraud_v1;

    fn alerts(format: Format, data: &[u8]) -> (u64, u64, u64) {
        let mut scorer = Scorer::new();
        let events = match format {
            Format::Json => json(data, &mut scorer).expect("json"),
            Format::Protobuf => protobuf(data, &mut scorer).expect("protobuf"),
        };
        let text = String::from_utf8(scorer.out).expect("utf-8");
        let mut n = 0;
        let mut sum = 0u64;
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            n += 1;
            sum = sum.wrapping_add(v["txn_id"].as_u64().expect("txn_id"));
        }
        (events, n, sum)
    }

    #[test]
    fn matches_the_reference_in_both_formats() {
        let n = 50_000;
        let r = fraud_v1::score(n);
        let want = (n, r.alerts, r.checksum);
        assert_eq!(alerts(Format::Json, &fraud_v1::encode_json(n)), want);
        assert_eq!(
            alerts(Format::Protobuf, &fraud_v1::encode_protobuf(n)),
            want
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut s = Scorer::new();
        assert!(json(b"{\"txn_id\": oops}\n", &mut s).is_err());
        assert!(protobuf(&[5, 8, 1], &mut s).is_err());
        assert!(protobuf(&[2, 8, 0x80], &mut s).is_err());
    }
}
