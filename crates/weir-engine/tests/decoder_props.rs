//! Property tests of the decoders through the whole engine.
//!
//! (a) Arbitrary bytes, as JSON lines and as length-delimited protobuf,
//!     never panic or fail the run, and every record is accounted for: it
//!     reaches the sink or the dead-letter file (with its exact bytes).
//! (b) Random valid records (integers at their extremes, any finite f64,
//!     strings with escapes and any Unicode, optional fields, undeclared
//!     keys) encoded by serde_json (or by hand for protobuf) come out of
//!     the sink with exactly those values.

mod common;
use common::{run_in_memory, varint, without_id, Ran};

use std::collections::BTreeMap;

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{Map, Value};
use weir_engine::RunSummary;
use weir_test_support::pipelines::{transaction_proto, TRANSACTION_FIELDS};

/// What a run left behind.
struct Outcome {
    summary: RunSummary,
    /// Sink lines as written.
    lines: Vec<String>,
    /// Dead-letter entries, sorted by position.
    dead: Vec<Value>,
}

fn run_pipeline(toml: &str, input: Vec<u8>, shards: usize) -> Outcome {
    let Ran {
        summary,
        sink_lines,
        dead,
    } = run_in_memory(toml, input, shards);
    Outcome {
        summary,
        lines: sink_lines.iter().map(|l| without_id(l)).collect(),
        dead,
    }
}

fn json_pipeline(batch_rows: usize, max_record_bytes: usize) -> String {
    format!(
        r#"
name = "json-props"

[settings]
batch_rows = {batch_rows}

[[sources]]
name = "in"
type = "memory"
framing = "lines"

[[steps]]
name = "decode"
type = "decode"
input = "in"
format = "json"
max_record_bytes = {max_record_bytes}
fields = [
  {{ name = "id", type = "u64" }},
  {{ name = "u", type = "u64" }},
  {{ name = "i", type = "i64" }},
  {{ name = "f", type = "f64" }},
  {{ name = "s", type = "string" }},
  {{ name = "n", type = "i64", optional = true }},
]

[[sinks]]
name = "out"
type = "file"
input = "decode"
path = "out.jsonl"
columns = ["f", "id", "u", "i", "s", "n"]
"#
    )
}

fn proto_pipeline(batch_rows: usize, max_record_bytes: usize) -> String {
    format!(
        r#"
name = "proto-props"

[settings]
batch_rows = {batch_rows}

[[sources]]
name = "in"
type = "memory"
framing = "length_delimited"

[[steps]]
name = "decode"
type = "decode"
input = "in"
format = "protobuf"
proto = "{proto}"
message = "weir.examples.fraud.Transaction"
max_record_bytes = {max_record_bytes}
{fields}

[[sinks]]
name = "out"
type = "file"
input = "decode"
path = "out.jsonl"
"#,
        proto = transaction_proto().display(),
        fields = TRANSACTION_FIELDS,
    )
}

/// Checks that the `records` given to a run are all accounted for: each
/// either reached the sink or is in the dead-letter file at its position,
/// from the decode step, with its exact bytes.
fn check_accounted(o: &Outcome, records: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let n = records.len() as u64;
    prop_assert_eq!(o.summary.source_records, n);
    prop_assert_eq!(o.summary.dead_letters, o.dead.len() as u64);
    prop_assert_eq!(o.summary.sinks[0].records, o.lines.len() as u64);
    prop_assert_eq!(
        o.lines.len() as u64 + o.summary.dead_letters,
        n,
        "sink + dead letters == records"
    );
    let mut last = None;
    for d in &o.dead {
        let position = d["position"].as_u64().expect("position");
        prop_assert!(position < n, "position {} of {} records", position, n);
        prop_assert!(last < Some(position), "position {} twice", position);
        last = Some(position);
        prop_assert_eq!(&d["step"], "decode");
        prop_assert!(
            !d["reason"].as_str().unwrap_or_default().is_empty(),
            "no reason: {}",
            d
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["bytes_base64"].as_str().expect("bytes_base64"))
            .expect("base64");
        prop_assert_eq!(
            &bytes,
            &records[position as usize],
            "bytes of record {}",
            position
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// (a) Arbitrary bytes.

/// A valid JSON record of the props pipeline, as bytes.
fn valid_json_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        -1e6f64..1e6,
        "[ -~é😀]{0,8}",
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(id, u, i, f, s, n)| {
            let mut m = Map::new();
            m.insert("id".into(), id.into());
            m.insert("u".into(), u.into());
            m.insert("i".into(), i.into());
            m.insert("f".into(), f.into());
            m.insert("s".into(), s.into());
            if let Some(n) = n {
                m.insert("n".into(), n.into());
            }
            serde_json::to_vec(&Value::Object(m)).expect("encodes")
        })
}

/// Edits a record: each (offset, byte, kind) flips, inserts or deletes one
/// byte.
fn mutate(mut bytes: Vec<u8>, edits: Vec<(usize, u8, u8)>) -> Vec<u8> {
    for (at, b, kind) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            at % (bytes.len() + 1)
        };
        match kind % 3 {
            0 if at < bytes.len() => bytes[at] = b,
            1 => bytes.insert(at, b),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.push(b),
        }
    }
    bytes
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..4)
}

/// A JSON-lines record: random bytes, bytes from JSON's alphabet, or a
/// valid record with a few bytes edited (to get past the first checks).
fn json_record() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = br#"{}[]":,0123456789-+.eE \tnulltruefalseiduifsn\u00e9"#.to_vec();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        proptest::collection::vec(any::<u8>(), 100..160),
        proptest::collection::vec(proptest::sample::select(alphabet), 0..48),
        (valid_json_bytes(), edits()).prop_map(|(b, e)| mutate(b, e)),
        valid_json_bytes(),
    ]
    .prop_map(|mut r| {
        // One record per line: no '\n' inside, and no final '\r' (the
        // framing drops it).
        for b in r.iter_mut().filter(|b| **b == b'\n') {
            *b = b' ';
        }
        if r.last() == Some(&b'\r') {
            r.pop();
        }
        r
    })
}

/// A valid Transaction body with some fields.
fn valid_proto_bytes() -> impl Strategy<Value = Vec<u8>> {
    (any::<u64>(), any::<u32>(), any::<i64>(), "[A-Z]{0,3}").prop_map(|(id, m, a, c)| {
        let mut b = Vec::new();
        b.push(0x08);
        varint(id, &mut b);
        b.push(0x18);
        varint(u64::from(m), &mut b);
        b.push(0x20);
        varint(a as u64, &mut b);
        b.push(0x2a);
        varint(c.len() as u64, &mut b);
        b.extend_from_slice(c.as_bytes());
        b
    })
}

fn proto_record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        (valid_proto_bytes(), edits()).prop_map(|(b, e)| mutate(b, e)),
        valid_proto_bytes(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_lines_are_all_accounted_for(
        records in proptest::collection::vec(json_record(), 0..24),
        batch_rows in proptest::sample::select(vec![1usize, 3, 4096]),
        shards in 1usize..=3,
    ) {
        let mut input = Vec::new();
        for r in &records {
            input.extend_from_slice(r);
            input.push(b'\n');
        }
        // A record limit inside the generated sizes, so some are oversized.
        let o = run_pipeline(&json_pipeline(batch_rows, 128), input, shards);
        check_accounted(&o, &records)?;
        for l in &o.lines {
            prop_assert!(serde_json::from_str::<Value>(l).is_ok(), "sink line is not JSON: {}", l);
        }
    }

    #[test]
    fn arbitrary_protobuf_records_are_all_accounted_for(
        records in proptest::collection::vec(proto_record(), 0..24),
        batch_rows in proptest::sample::select(vec![1usize, 3, 4096]),
        shards in 1usize..=3,
    ) {
        let mut input = Vec::new();
        for r in &records {
            varint(r.len() as u64, &mut input);
            input.extend_from_slice(r);
        }
        let o = run_pipeline(&proto_pipeline(batch_rows, 30), input, shards);
        check_accounted(&o, &records)?;
        for l in &o.lines {
            prop_assert!(serde_json::from_str::<Value>(l).is_ok(), "sink line is not JSON: {}", l);
        }
    }

    /// Not even the framing is valid: records are whatever the
    /// length-delimited framing cuts out of the bytes, the last one
    /// possibly truncated.
    #[test]
    fn arbitrary_length_delimited_stream_is_accounted_for(
        stream in proptest::collection::vec(any::<u8>(), 0..256),
        batch_rows in proptest::sample::select(vec![1usize, 3, 4096]),
        shards in 1usize..=3,
    ) {
        let frames = weir_engine::frame::records(weir_config::Framing::LengthDelimited, &stream).count() as u64;
        let o = run_pipeline(&proto_pipeline(batch_rows, 1 << 20), stream, shards);
        prop_assert_eq!(o.summary.source_records, frames);
        prop_assert_eq!(o.summary.dead_letters, o.dead.len() as u64);
        prop_assert_eq!(o.lines.len() as u64 + o.summary.dead_letters, frames);
    }
}

#[test]

fn huge_varint_length_prefix_does_not_panic() {
    // A 10-byte varint of u64::MAX as the length prefix, then a few bytes.
    let mut stream = vec![0xff; 9];
    stream.push(0x01);
    stream.extend_from_slice(b"abc");
    let framed = std::panic::catch_unwind(|| {
        weir_engine::frame::next_record(weir_config::Framing::LengthDelimited, &stream, true)
    });
    assert!(framed.is_ok(), "next_record panicked");
    let o = std::panic::catch_unwind(|| {
        run_pipeline(&proto_pipeline(4096, 1 << 20), stream.clone(), 1)
    });
    let o = o.unwrap_or_else(|_| panic!("the run panicked"));
    assert_eq!(o.lines.len(), 0);
    assert_eq!(o.summary.dead_letters, o.summary.source_records);
    assert!(o.summary.dead_letters >= 1);
}

// ---------------------------------------------------------------------------
// (b) Valid records round-trip.

/// How serde_json writes strings: as is, or with `\u` escapes for every
/// non-ASCII character (surrogate pairs beyond the BMP), or for every
/// character (keys included, so declared keys arrive escaped).
#[derive(Debug, Clone, Copy)]
enum Escaping {
    Plain,
    NonAscii,
    All,
}

/// serde_json's compact encoding, then more `\u` escapes inside strings
/// as `escaping` asks (serde_json itself only escapes what it must).
fn encode(value: &Value, escaping: Escaping) -> Vec<u8> {
    let json = serde_json::to_string(value).expect("encodes");
    let escape = |c: char| match escaping {
        Escaping::Plain => false,
        Escaping::NonAscii => !c.is_ascii(),
        Escaping::All => true,
    };
    let mut out = String::with_capacity(json.len() * 2);
    let mut in_string = false;
    let mut chars = json.chars();
    while let Some(c) = chars.next() {
        if !in_string {
            in_string = c == '"';
            out.push(c);
            continue;
        }
        match c {
            '"' => {
                in_string = false;
                out.push(c);
            }
            '\\' => {
                // An escape serde_json wrote: copy it whole.
                out.push(c);
                let e = chars.next().expect("escaped character");
                out.push(e);
                if e == 'u' {
                    out.extend(chars.by_ref().take(4));
                }
            }
            c if escape(c) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.into_bytes()
}

#[derive(Debug, Clone)]
struct Record {
    u: u64,
    i: i64,
    f: f64,
    s: String,
    n: Option<i64>,
    /// When `n` is None: write `"n":null` (true) or leave it out (false).
    null_written: bool,
    /// An undeclared key and its value.
    extra: Option<(String, Value)>,
    escaping: Escaping,
}

fn text() -> impl Strategy<Value = String> {
    let special = proptest::sample::select(vec![
        '"', '\\', '/', '\n', '\r', '\t', '\u{0}', '\u{8}', '\u{c}', '\u{1f}', '\u{7f}', 'é', 'ß',
        '€', '\u{2028}', '\u{fffd}', '😀', '𝄞',
    ]);
    proptest::collection::vec(
        prop_oneof![any::<char>(), special, proptest::char::range('a', 'z')],
        0..16,
    )
    .prop_map(String::from_iter)
}

fn finite_f64() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as F;
    prop_oneof![
        F::POSITIVE | F::NEGATIVE | F::NORMAL | F::SUBNORMAL | F::ZERO,
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
        proptest::sample::select(vec![
            0.1,
            -0.0,
            1e21,
            1e-7,
            5e-324,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            9007199254740993.0
        ]),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn record() -> impl Strategy<Value = Record> {
    let extra_key = prop_oneof![
        Just("x".to_string()),
        Just("ünï\"code".to_string()),
        Just("i ".to_string()),
        Just("".to_string())
    ];
    (
        prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX)],
        prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0i64)],
        finite_f64(),
        text(),
        proptest::option::of(any::<i64>()),
        any::<bool>(),
        proptest::option::of((extra_key, json_value())),
        proptest::sample::select(vec![Escaping::Plain, Escaping::NonAscii, Escaping::All]),
    )
        .prop_map(|(u, i, f, s, n, null_written, extra, escaping)| Record {
            u,
            i,
            f,
            s,
            n,
            null_written,
            extra,
            escaping,
        })
}

fn record_json(id: u64, r: &Record) -> Vec<u8> {
    let mut m = Map::new();
    if let Some((k, v)) = &r.extra {
        m.insert(k.clone(), v.clone());
    }
    m.insert("id".into(), id.into());
    m.insert("u".into(), r.u.into());
    m.insert("i".into(), r.i.into());
    m.insert("f".into(), r.f.into());
    m.insert("s".into(), r.s.clone().into());
    match r.n {
        Some(n) => {
            m.insert("n".into(), n.into());
        }
        None if r.null_written => {
            m.insert("n".into(), Value::Null);
        }
        None => {}
    }
    encode(&Value::Object(m), r.escaping)
}

/// The text of the first column of a sink line, `{"f":<number>,...`: parsed
/// with Rust's exact float parser (serde_json's default float parsing is
/// not guaranteed to round-trip).
fn leading_float(line: &str) -> f64 {
    let rest = line
        .strip_prefix("{\"f\":")
        .unwrap_or_else(|| panic!("line does not start with f: {line}"));
    let end = rest.find(',').expect("more columns");
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{:?} is not a float: {e}", &rest[..end]))
}

/// A Transaction with every field chosen.
#[derive(Debug, Clone)]
struct Txn {
    txn_id: u64,
    card_id: u64,
    merchant_id: u32,
    amount_cents: i64,
    country: String,
    ts: i64,
    /// Write the fields in this order (a permutation of 0..6).
    order: Vec<usize>,
    /// Unknown fields to put before the known ones.
    unknown: Vec<(u32, u8, Vec<u8>)>,
}

fn txn() -> impl Strategy<Value = Txn> {
    let unknown = proptest::collection::vec(
        (
            7u32..1000,
            prop_oneof![Just(0u8), Just(1u8), Just(2u8), Just(5u8)],
            proptest::collection::vec(any::<u8>(), 0..8),
        ),
        0..3,
    );
    (
        any::<u64>(),
        prop_oneof![any::<u64>(), Just(0u64)],
        any::<u32>(),
        prop_oneof![any::<i64>(), Just(i64::MIN), Just(-1i64), Just(0i64)],
        text(),
        any::<i64>(),
        Just((0..6).collect::<Vec<usize>>()).prop_shuffle(),
        unknown,
    )
        .prop_map(
            |(txn_id, card_id, merchant_id, amount_cents, country, ts, order, unknown)| Txn {
                txn_id,
                card_id,
                merchant_id,
                amount_cents,
                country,
                ts,
                order,
                unknown,
            },
        )
}

fn txn_bytes(t: &Txn) -> Vec<u8> {
    let mut b = Vec::new();
    for (number, wire, data) in &t.unknown {
        varint(u64::from((number << 3) | u32::from(*wire)), &mut b);
        match wire {
            0 => varint(
                data.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)),
                &mut b,
            ),
            1 => b.extend_from_slice(&{
                let mut d = data.clone();
                d.resize(8, 0);
                d
            }),
            5 => b.extend_from_slice(&{
                let mut d = data.clone();
                d.resize(4, 0);
                d
            }),
            _ => {
                varint(data.len() as u64, &mut b);
                b.extend_from_slice(data);
            }
        }
    }
    for &f in &t.order {
        match f {
            0 => {
                b.push(0x08);
                varint(t.txn_id, &mut b);
            }
            1 => {
                b.push(0x10);
                varint(t.card_id, &mut b);
            }
            2 => {
                b.push(0x18);
                varint(u64::from(t.merchant_id), &mut b);
            }
            3 => {
                b.push(0x20);
                varint(t.amount_cents as u64, &mut b);
            }
            4 => {
                b.push(0x2a);
                varint(t.country.len() as u64, &mut b);
                b.extend_from_slice(t.country.as_bytes());
            }
            _ => {
                b.push(0x30);
                varint(t.ts as u64, &mut b);
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_json_records_round_trip(
        records in proptest::collection::vec(record(), 1..16),
        batch_rows in proptest::sample::select(vec![1usize, 3, 4096]),
        shards in 1usize..=3,
    ) {
        let mut input = Vec::new();
        for (id, r) in records.iter().enumerate() {
            let line = record_json(id as u64, r);
            prop_assert!(!line.contains(&b'\n'));
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let o = run_pipeline(&json_pipeline(batch_rows, 1 << 20), input, shards);
        prop_assert!(o.dead.is_empty(), "valid records were rejected: {:?}", o.dead);
        prop_assert_eq!(o.lines.len(), records.len());
        let mut seen = BTreeMap::new();
        for line in &o.lines {
            let v: Value = serde_json::from_str(line).map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
            let id = v["id"].as_u64().expect("id");
            let r = &records[id as usize];
            prop_assert_eq!(v["u"].as_u64(), Some(r.u), "{}", line);
            prop_assert_eq!(v["i"].as_i64(), Some(r.i), "{}", line);
            prop_assert_eq!(v["s"].as_str(), Some(r.s.as_str()), "{}", line);
            match r.n {
                Some(n) => prop_assert_eq!(v["n"].as_i64(), Some(n), "{}", line),
                None => prop_assert!(v["n"].is_null(), "{}", line),
            }
            let f = leading_float(line);
            prop_assert_eq!(f.to_bits(), r.f.to_bits(), "f: got {:?}, want {:?} in {}", f, r.f, line);
            prop_assert!(v.as_object().map(|m| m.len()) == Some(6), "only the declared columns: {}", line);
            prop_assert!(seen.insert(id, ()).is_none(), "id {} twice", id);
        }
    }

    #[test]
    fn valid_protobuf_records_round_trip(
        txns in proptest::collection::vec(txn(), 1..16),
        batch_rows in proptest::sample::select(vec![1usize, 3, 4096]),
        shards in 1usize..=3,
    ) {
        let mut input = Vec::new();
        for t in &txns {
            let body = txn_bytes(t);
            varint(body.len() as u64, &mut input);
            input.extend_from_slice(&body);
        }
        let o = run_pipeline(&proto_pipeline(batch_rows, 1 << 20), input, shards);
        prop_assert!(o.dead.is_empty(), "valid records were rejected: {:?}", o.dead);
        // Output order across workers is not defined: compare as multisets.
        let mut got: Vec<(u64, u64, u64, i64, String, i64)> = Vec::new();
        for line in &o.lines {
            let v: Value = serde_json::from_str(line).map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
            got.push((
                v["txn_id"].as_u64().expect("txn_id"),
                v["card_id"].as_u64().expect("card_id"),
                v["merchant_id"].as_u64().expect("merchant_id"),
                v["amount_cents"].as_i64().expect("amount_cents"),
                v["country"].as_str().expect("country").to_string(),
                v["ts"].as_i64().expect("ts"),
            ));
        }
        let mut want: Vec<(u64, u64, u64, i64, String, i64)> = txns
            .iter()
            .map(|t| (t.txn_id, t.card_id, u64::from(t.merchant_id), t.amount_cents, t.country.clone(), t.ts))
            .collect();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want);
    }
}
