//! The fraud-v1 workload: card-transaction scoring.
//!
//! A Rust port of `shared/workloads/fraud_v1_reference.py` (the executable
//! definition; `fraud-v1.md` beside it describes it). The generator draws the
//! same SplitMix64 stream, the encoders produce byte-identical JSON lines and
//! canonical length-delimited Protobuf (`examples/fraud/transaction.proto`),
//! and the scorer evaluates the same `f64` expressions in the same order, so
//! its alerts match the script's exactly.

use std::collections::{HashMap, VecDeque};

/// Seed of the SplitMix64 generator.
pub const SEED: u64 = 42;
/// Number of distinct cards (`card_id = r0 % CARDS`).
pub const CARDS: u64 = 10_000;
/// Number of distinct merchants (`merchant_id = r1 % MERCHANTS`).
pub const MERCHANTS: u64 = 5_000;
/// Country codes; `country = COUNTRIES[r4 % 20]`.
pub const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BR", "MX", "CA", "JP", "KR", "IN", "AU",
    "NG", "ZA", "AE", "SG",
];
/// Event time of event 0 in throughput mode (ms); event `i` has `BASE_TS + i`.
pub const BASE_TS: i64 = 1_700_000_000_000;
/// Length of the per-card sliding event-time window (ms).
pub const WINDOW_MS: i64 = 60_000;
/// Logistic-regression weights, in feature order.
pub const WEIGHTS: [f64; 5] = [0.8, 0.3, 0.5, 0.2, 1.5];
/// Logistic-regression bias.
pub const BIAS: f64 = -40.0;
/// An alert is emitted when the score is strictly greater than this.
pub const THRESHOLD: f64 = 0.9;

/// One card transaction (one event of the workload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transaction {
    /// Transaction id: the event index `i`.
    pub txn_id: u64,
    /// Card id, `0..CARDS`.
    pub card_id: u64,
    /// Merchant id, `0..MERCHANTS`.
    pub merchant_id: u32,
    /// Amount in cents; may be 0 (such events are dropped by the pipeline).
    pub amount_cents: i64,
    /// ISO country code, one of [`COUNTRIES`].
    pub country: &'static str,
    /// Event time in ms since the Unix epoch.
    pub ts: i64,
}

/// The workload's event generator: SplitMix64 seeded with [`SEED`], five
/// draws (r0..r4) per event, exactly like the reference script.
#[derive(Debug, Clone)]
pub struct Generator {
    state: u64,
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl Generator {
    /// A generator at the start of the stream.
    pub fn new() -> Self {
        Generator { state: SEED }
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Draws the next event (r0..r4). The caller supplies `txn_id` (the event
    /// index) and `ts`: `BASE_TS + i` in throughput mode, wall-clock ms in
    /// latency mode.
    #[inline]
    pub fn next_event(&mut self, txn_id: u64, ts: i64) -> Transaction {
        let r0 = self.next_u64();
        let r1 = self.next_u64();
        let r2 = self.next_u64();
        let r3 = self.next_u64();
        let r4 = self.next_u64();
        let mut amount_cents = (r2 % 100_000) as i64;
        if r3.is_multiple_of(100) {
            amount_cents *= 20;
        }
        Transaction {
            txn_id,
            card_id: r0 % CARDS,
            merchant_id: (r1 % MERCHANTS) as u32,
            amount_cents,
            country: COUNTRIES[(r4 % COUNTRIES.len() as u64) as usize],
            ts,
        }
    }
}

/// The first `n` events in throughput mode (`ts = BASE_TS + i`).
pub fn events(n: u64) -> impl Iterator<Item = Transaction> {
    let mut g = Generator::new();
    (0..n).map(move |i| g.next_event(i, BASE_TS + i as i64))
}

// ---------------------------------------------------------------------------
// JSON

const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends the decimal form of `v` to `out` (no allocation beyond `out`).
#[inline]
fn write_u64(mut v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut pos = buf.len();
    while v >= 100 {
        let r = (v % 100) as usize * 2;
        v /= 100;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    }
    if v >= 10 {
        let r = v as usize * 2;
        pos -= 2;
        buf[pos..pos + 2].copy_from_slice(&DIGIT_PAIRS[r..r + 2]);
    } else {
        pos -= 1;
        buf[pos] = b'0' + v as u8;
    }
    out.extend_from_slice(&buf[pos..]);
}

#[inline]
fn write_i64(v: i64, out: &mut Vec<u8>) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(v.unsigned_abs(), out);
}

/// Appends `t` as one compact JSON object followed by `'\n'`: the same bytes
/// as the script's `json.dumps(e, separators=(",", ":")) + "\n"` (same field
/// order). Country codes are plain ASCII and need no escaping.
pub fn write_json(t: &Transaction, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"txn_id\":");
    write_u64(t.txn_id, out);
    out.extend_from_slice(b",\"card_id\":");
    write_u64(t.card_id, out);
    out.extend_from_slice(b",\"merchant_id\":");
    write_u64(u64::from(t.merchant_id), out);
    out.extend_from_slice(b",\"amount_cents\":");
    write_i64(t.amount_cents, out);
    out.extend_from_slice(b",\"country\":\"");
    out.extend_from_slice(t.country.as_bytes());
    out.extend_from_slice(b"\",\"ts\":");
    write_i64(t.ts, out);
    out.extend_from_slice(b"}\n");
}

/// The first `n` events (throughput mode) as JSON lines, byte-identical to
/// `fraud_v1_reference.py generate n`.
pub fn encode_json(n: u64) -> Vec<u8> {
    // Upper bound per line: 88 bytes of keys, punctuation, country and a
    // 13-digit ts, plus card (4), merchant (4) and amount (7) digits and the
    // digits of the largest txn_id; reserving it avoids any reallocation.
    let digits = n.saturating_sub(1).checked_ilog10().unwrap_or(0) as usize + 1;
    let mut out = Vec::with_capacity((n as usize).saturating_mul(103 + digits));
    for t in events(n) {
        write_json(&t, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------
// Protobuf

#[inline]
fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn write_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Size of a varint field (tag + value), 0 when the value is the default.
#[inline]
fn varint_field_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

#[inline]
fn write_varint_field(tag: u8, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        out.push(tag);
        write_varint(v, out);
    }
}

// Tags: (field number << 3) | wire type (0 = varint, 2 = length-delimited).
const TAG_TXN_ID: u8 = 1 << 3;
const TAG_CARD_ID: u8 = 2 << 3;
const TAG_MERCHANT_ID: u8 = 3 << 3;
const TAG_AMOUNT_CENTS: u8 = 4 << 3;
const TAG_COUNTRY: u8 = (5 << 3) | 2;
const TAG_TS: u8 = 6 << 3;

/// Appends `t` as a length-delimited Protobuf message (varint length prefix,
/// as protobuf's `writeDelimitedTo`) per `examples/fraud/transaction.proto`.
/// The encoding is canonical proto3: fields in number order, default-valued
/// (zero / empty) fields omitted, `int64` negatives as 10-byte varints.
pub fn write_protobuf_delimited(t: &Transaction, out: &mut Vec<u8>) {
    let country = t.country.as_bytes();
    let country_len = if country.is_empty() {
        0
    } else {
        1 + varint_len(country.len() as u64) + country.len()
    };
    let len = varint_field_len(t.txn_id)
        + varint_field_len(t.card_id)
        + varint_field_len(u64::from(t.merchant_id))
        + varint_field_len(t.amount_cents as u64)
        + country_len
        + varint_field_len(t.ts as u64);
    write_varint(len as u64, out);
    write_varint_field(TAG_TXN_ID, t.txn_id, out);
    write_varint_field(TAG_CARD_ID, t.card_id, out);
    write_varint_field(TAG_MERCHANT_ID, u64::from(t.merchant_id), out);
    write_varint_field(TAG_AMOUNT_CENTS, t.amount_cents as u64, out);
    if !country.is_empty() {
        out.push(TAG_COUNTRY);
        write_varint(country.len() as u64, out);
        out.extend_from_slice(country);
    }
    write_varint_field(TAG_TS, t.ts as u64, out);
}

/// The first `n` events (throughput mode) as length-delimited Protobuf.
pub fn encode_protobuf(n: u64) -> Vec<u8> {
    // Upper bound per message: length prefix (1), tags (6), card (2),
    // merchant (2), amount (3), country (1 + 2), ts (6) and the txn_id varint.
    let txn_len = varint_len(n.saturating_sub(1));
    let mut out = Vec::with_capacity((n as usize).saturating_mul(23 + txn_len));
    for t in events(n) {
        write_protobuf_delimited(&t, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------
// Reference scorer

/// Aggregate results of the reference pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Events kept by the filter (`amount_cents > 0`).
    pub kept: u64,
    /// Number of alerts (score > [`THRESHOLD`]).
    pub alerts: u64,
    /// Sum of the alerts' `txn_id`s, wrapping (mod 2^64).
    pub checksum: u64,
}

/// The reference pipeline, one event at a time, with the script's `score()`
/// semantics: a per-card deque of `(ts, amount_cents)`, exact integer
/// aggregates, `f64` features in the same order, `z` summed from the bias in
/// feature order and `p = 1 / (1 + exp(-z))`.
///
/// Usable on any event stream (e.g. latency-mode events with wall-clock
/// `ts`); [`score`] and [`alerts`] run it on the throughput-mode stream.
#[derive(Debug, Default)]
pub struct Scorer {
    /// Windows of cards `0..CARDS` (the generator's range), by index.
    dense: Vec<VecDeque<(i64, i64)>>,
    /// Windows of any other card id.
    sparse: HashMap<u64, VecDeque<(i64, i64)>>,
}

impl Scorer {
    /// An empty scorer (no window state).
    pub fn new() -> Self {
        Scorer {
            dense: (0..CARDS).map(|_| VecDeque::new()).collect(),
            sparse: HashMap::new(),
        }
    }

    /// Feeds one event. Returns `None` when the filter drops it, else
    /// `Some((score, alert))` where `alert` is `score > THRESHOLD`.
    pub fn push(&mut self, t: &Transaction) -> Option<(f64, bool)> {
        if t.amount_cents <= 0 {
            return None;
        }
        let w = if t.card_id < self.dense.len() as u64 {
            &mut self.dense[t.card_id as usize]
        } else {
            self.sparse.entry(t.card_id).or_default()
        };
        w.push_back((t.ts, t.amount_cents));
        while let Some(&(ts, _)) = w.front() {
            if ts <= t.ts - WINDOW_MS {
                w.pop_front();
            } else {
                break;
            }
        }
        // The current event is in the window unless its own ts is out of
        // range (impossible), so the window is non-empty here.
        let cnt = w.len() as i64;
        let total: i64 = w.iter().map(|&(_, a)| a).sum();
        let biggest: i64 = w.iter().map(|&(_, a)| a).max().unwrap_or(0);
        let amount = t.amount_cents;
        let x = [
            amount as f64 / 10_000.0,
            cnt as f64,
            total as f64 / 100_000.0,
            biggest as f64 / 10_000.0,
            amount as f64 / (total as f64 / cnt as f64),
        ];
        let mut z = BIAS;
        for (xi, wi) in x.iter().zip(WEIGHTS.iter()) {
            z += xi * wi;
        }
        let p = 1.0 / (1.0 + (-z).exp());
        Some((p, p > THRESHOLD))
    }
}

fn run(n: u64, mut on_alert: impl FnMut(&Transaction, f64)) -> Reference {
    let mut scorer = Scorer::new();
    let mut r = Reference {
        kept: 0,
        alerts: 0,
        checksum: 0,
    };
    for t in events(n) {
        if let Some((p, alert)) = scorer.push(&t) {
            r.kept += 1;
            if alert {
                r.alerts += 1;
                r.checksum = r.checksum.wrapping_add(t.txn_id);
                on_alert(&t, p);
            }
        }
    }
    r
}

/// Runs the reference pipeline on the first `n` events (throughput mode);
/// the same results as `fraud_v1_reference.py score n`.
pub fn score(n: u64) -> Reference {
    run(n, |_, _| {})
}

/// The individual reference alerts `(txn_id, card_id, score)` for the first
/// `n` events (throughput mode), in event order.
pub fn alerts(n: u64) -> Vec<(u64, u64, f64)> {
    let mut v = Vec::new();
    run(n, |t, p| v.push((t.txn_id, t.card_id, p)));
    v
}
