//! Bad records never stop a run: each goes to the dead-letter file with the
//! step, its 0-based position in the source, a reason and its exact bytes,
//! and every good record still reaches the sink.

mod common;
use common::{run_in_memory, varint, without_id, Ran};

use base64::Engine as _;
use serde_json::Value;
use weir_engine::RunSummary;
use weir_test_support::pipelines::{transaction_proto, TRANSACTION_FIELDS};

/// What a run left behind.
struct Outcome {
    summary: RunSummary,
    /// Sink records, sorted by their id column.
    rows: Vec<Value>,
    /// Dead-letter entries, sorted by position.
    dead: Vec<Value>,
}

/// Runs `toml` over `input`; sink rows are sorted by the integer column
/// `id_column` (output order across workers is not defined).
fn run_pipeline(toml: &str, input: &[u8], shards: usize, id_column: &str) -> Outcome {
    let Ran {
        summary,
        sink_lines,
        dead,
    } = run_in_memory(toml, input.to_vec(), shards);
    let mut rows: Vec<Value> = sink_lines
        .iter()
        .map(|l| {
            serde_json::from_str(&without_id(l))
                .unwrap_or_else(|e| panic!("sink line {l:?} is not JSON: {e}"))
        })
        .collect();
    rows.sort_by_key(|r| r[id_column].as_u64());
    Outcome {
        summary,
        rows,
        dead,
    }
}

/// A bad record: its position, its exact bytes (without framing) and a
/// substring its reason must contain.
struct Bad {
    position: u64,
    bytes: Vec<u8>,
    reason: &'static str,
}

/// Checks the dead-letter file against `bad`, entry by entry.
fn check_dead_letters(o: &Outcome, step: &str, bad: &[Bad]) {
    assert_eq!(
        o.dead
            .iter()
            .map(|d| d["position"].as_u64().expect("position"))
            .collect::<Vec<_>>(),
        bad.iter().map(|b| b.position).collect::<Vec<_>>(),
        "dead-letter positions: {:#?}",
        o.dead
    );
    for (d, b) in o.dead.iter().zip(bad) {
        assert_eq!(d["step"], step, "{d}");
        let reason = d["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("no reason in {d}"));
        assert!(
            reason.contains(b.reason),
            "record {}: reason {reason:?} should contain {:?}",
            b.position,
            b.reason
        );
        let encoded = d["bytes_base64"]
            .as_str()
            .unwrap_or_else(|| panic!("no bytes_base64 in {d}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("valid base64");
        assert_eq!(
            bytes, b.bytes,
            "record {}: bytes_base64 must hold the original bytes",
            b.position
        );
        // `text` is there exactly when the bytes are UTF-8.
        match std::str::from_utf8(&b.bytes) {
            Ok(t) => assert_eq!(d["text"], t, "{d}"),
            Err(_) => assert!(d.get("text").is_none(), "{d}"),
        }
        assert!(
            d.get("record").is_none(),
            "rejected while decoding: no decoded record: {d}"
        );
    }
    assert_eq!(
        o.summary.dead_letters,
        bad.len() as u64,
        "RunSummary.dead_letters"
    );
}

fn json_pipeline(batch_rows: usize, max_record_bytes: usize) -> String {
    format!(
        r#"
name = "bad-json"

[settings]
batch_rows = {batch_rows}

[[sources]]
name = "in"
type = "memory"
framing = "lines"

[[steps]]
name = "parse"
type = "decode"
input = "in"
format = "json"
max_record_bytes = {max_record_bytes}
fields = [
  {{ name = "id", type = "u64" }},
  {{ name = "amount", type = "i64" }},
  {{ name = "name", type = "string" }},
  {{ name = "note", type = "string", optional = true }},
]

[[sinks]]
name = "out"
type = "file"
input = "parse"
path = "out.jsonl"
"#
    )
}

/// The JSON test input: every record, the bad ones, and the good ones as
/// (id, amount, name).
struct JsonCase {
    records: Vec<Vec<u8>>,
    bad: Vec<Bad>,
    good: Vec<(u64, i64, String)>,
}

/// Good and bad JSON records, one per line. Good records have ids 1000+.
fn json_records() -> JsonCase {
    let oversized = format!(r#"{{"id":9,"amount":1,"name":"{}"}}"#, "x".repeat(200));
    let records: Vec<(Vec<u8>, Option<&'static str>)> = vec![
        (br#"{"id":1000,"amount":-5,"name":"first"}"#.to_vec(), None),
        // Malformed: the object is never closed.
        (br#"{"id":1,"amount":3,"name":"y""#.to_vec(), Some("malformed JSON")),
        (br#"{"id":1001,"amount":0,"name":"caf\u00e9","note":"ok"}"#.to_vec(), None),
        // A required field is missing.
        (br#"{"id":3,"name":"z"}"#.to_vec(), Some("missing field `amount`")),
        // A string where an integer is declared.
        (br#"{"id":"4","amount":1,"name":"q"}"#.to_vec(), Some("expected u64, found a string")),
        // A float where an integer is declared.
        (br#"{"id":5,"amount":1.5,"name":"q"}"#.to_vec(), Some("non-integer number 1.5")),
        // A negative number for u64.
        (br#"{"id":-6,"amount":1,"name":"q"}"#.to_vec(), Some("-6 is out of range for u64")),
        // Not UTF-8 (inside a string value).
        (b"{\"id\":7,\"amount\":1,\"name\":\"\xff\xfe\"}".to_vec(), Some("invalid UTF-8 at byte 27")),
        // Over max_record_bytes (128).
        (oversized.into_bytes(), Some("over the limit of 128 bytes")),
        (br#" {"name":"reordered","amount":9223372036854775807,"id":1002} "#.to_vec(), None),
        // Not JSON at all.
        (b"hello".to_vec(), Some("malformed JSON")),
        // An empty line is a record too.
        (Vec::new(), Some("found end of record")),
        // Integer out of range for i64.
        (br#"{"id":12,"amount":9223372036854775808,"name":"q"}"#.to_vec(), Some("out of range for i64")),
        // Null for a required field.
        (br#"{"id":13,"amount":null,"name":"q"}"#.to_vec(), Some("field `amount` is null")),
        // Trailing garbage after the object.
        (br#"{"id":14,"amount":1,"name":"q"} {}"#.to_vec(), Some("end of record after the object")),
        (br#"{"id":1003,"amount":-9223372036854775808,"name":"tab\there","note":null,"extra":[1,{"k":"v"}]}"#.to_vec(), None),
    ];
    let mut bytes = Vec::new();
    let mut bad = Vec::new();
    for (i, (r, why)) in records.iter().enumerate() {
        bytes.push(r.clone());
        if let Some(reason) = why {
            bad.push(Bad {
                position: i as u64,
                bytes: r.clone(),
                reason,
            });
        }
    }
    let good = vec![
        (1000, -5, "first".to_string()),
        (1001, 0, "café".to_string()),
        (1002, i64::MAX, "reordered".to_string()),
        (1003, i64::MIN, "tab\there".to_string()),
    ];
    JsonCase {
        records: bytes,
        bad,
        good,
    }
}

#[test]
fn bad_json_records_go_to_dead_letter() {
    let JsonCase { records, bad, good } = json_records();
    let mut input = Vec::new();
    for r in &records {
        input.extend_from_slice(r);
        input.push(b'\n');
    }
    for batch_rows in [4096, 1, 4] {
        for shards in [1, 2, 3] {
            let o = run_pipeline(&json_pipeline(batch_rows, 128), &input, shards, "id");
            assert_eq!(o.summary.source_records, records.len() as u64);
            check_dead_letters(&o, "parse", &bad);
            let got: Vec<(u64, i64, String)> = o
                .rows
                .iter()
                .map(|r| {
                    (
                        r["id"].as_u64().expect("id"),
                        r["amount"].as_i64().expect("amount"),
                        r["name"].as_str().expect("name").to_string(),
                    )
                })
                .collect();
            assert_eq!(got, good, "batch_rows={batch_rows} shards={shards}");
            assert_eq!(o.rows[1]["note"], "ok");
            assert!(o.rows[0]["note"].is_null() && o.rows[3]["note"].is_null());
            assert_eq!(o.summary.sinks[0].records, good.len() as u64);
            assert_eq!(
                o.rows.len() as u64 + o.summary.dead_letters,
                records.len() as u64
            );
        }
    }
}

#[test]
fn crlf_lines_and_missing_final_newline() {
    // "\r\n" endings are stripped; the last line needs no newline; the
    // position of a bad record counts every line before it.
    let input = b"{\"id\":1000,\"amount\":1,\"name\":\"a\"}\r\n{\"id\":2,\"amount\":x}\r\n{\"id\":1001,\"amount\":2,\"name\":\"b\"}";
    for shards in [1, 2, 3] {
        let o = run_pipeline(&json_pipeline(1, 1 << 20), input, shards, "id");
        assert_eq!(o.summary.source_records, 3);
        check_dead_letters(
            &o,
            "parse",
            &[Bad {
                position: 1,
                bytes: br#"{"id":2,"amount":x}"#.to_vec(),
                reason: "malformed JSON: expected a JSON value",
            }],
        );
        assert_eq!(o.rows.len(), 2);
    }
}

#[test]

fn malformed_json_in_undeclared_values_is_rejected() {
    // decode/json.rs `skip_value` scans any run of [-+.eE0-9] as a number,
    // accepts `"k"` without `: value` inside objects and `"a": 1` inside
    // arrays or as a top-level value; `key` does not check keys for raw
    // control bytes. None of these records is JSON.
    let cases: [&[u8]; 7] = [
        br#"{"id":1,"amount":1,"name":"a","extra":-}"#,
        br#"{"id":2,"amount":1,"name":"a","extra":1.2.3}"#,
        br#"{"id":3,"amount":1,"name":"a","extra":--1e}"#,
        br#"{"id":4,"amount":1,"name":"a","extra":{"k"}}"#,
        br#"{"id":5,"amount":1,"name":"a","extra":["k":1]}"#,
        br#"{"id":6,"amount":1,"name":"a","extra":"k":"v"}"#,
        // A raw control byte (tab) inside an object key.
        b"{\"id\":7,\"amount\":1,\"name\":\"a\",\"ex\ttra\":1}",
    ];
    for c in cases {
        assert!(
            serde_json::from_slice::<Value>(c).is_err(),
            "test case is valid JSON: {}",
            String::from_utf8_lossy(c)
        );
    }
    let input = cases.join(&b'\n');
    let o = run_pipeline(&json_pipeline(4096, 1 << 20), &input, 1, "id");
    let accepted: Vec<&Value> = o.rows.iter().collect();
    assert!(
        accepted.is_empty(),
        "malformed records reached the sink: {accepted:?}"
    );
    assert_eq!(o.summary.dead_letters, cases.len() as u64);
}

// ---------------------------------------------------------------------------
// Protobuf

fn proto_pipeline(batch_rows: usize, max_record_bytes: usize) -> String {
    format!(
        r#"
name = "bad-proto"

[settings]
batch_rows = {batch_rows}

[[sources]]
name = "in"
type = "memory"
framing = "length_delimited"

[[steps]]
name = "decode_pb"
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
input = "decode_pb"
path = "out.jsonl"
columns = ["txn_id", "card_id", "merchant_id", "amount_cents", "country", "ts"]
"#,
        proto = transaction_proto().display(),
        fields = TRANSACTION_FIELDS,
    )
}

/// A Transaction message body (no length prefix).
fn transaction(t: &weir_workloads::fraud_v1::Transaction) -> Vec<u8> {
    let mut framed = Vec::new();
    weir_workloads::fraud_v1::write_protobuf_delimited(t, &mut framed);
    // Strip the varint length prefix.
    let prefix = framed
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("length prefix")
        + 1;
    framed[prefix..].to_vec()
}

fn txn(txn_id: u64, country: &'static str) -> weir_workloads::fraud_v1::Transaction {
    weir_workloads::fraud_v1::Transaction {
        txn_id,
        card_id: 77,
        merchant_id: 4000,
        amount_cents: -1234,
        country,
        ts: 1_700_000_000_000 + txn_id as i64,
    }
}

#[test]
fn bad_protobuf_records_go_to_dead_letter() {
    let good1 = transaction(&txn(1000, "GB"));
    let good2 = transaction(&txn(1001, "DE"));
    // Truncated inside the country string: the frame is intact (its length
    // is the truncated body's), the message is not.
    let mut truncated = transaction(&txn(2, "GB"));
    let at = truncated
        .windows(2)
        .position(|w| w == [0x2a, 0x02])
        .expect("country field");
    truncated.truncate(at + 3);
    // Field 1 as a varint key with no value after it.
    let garbage_key = vec![0xff, 0xff, 0xff];
    // country (field 5, string) sent as a varint.
    let wrong_wire = vec![0x28, 0x01];
    // country with invalid UTF-8.
    let bad_utf8 = vec![0x2a, 0x02, 0xc3, 0x28];
    // merchant_id (u32) too large.
    let mut big_merchant = vec![0x18];
    varint(u64::from(u32::MAX) + 1, &mut big_merchant);
    // Wire type 3 (start group) is not supported.
    let group = vec![0x0b, 0x0c];
    // Field number 0.
    let field_zero = vec![0x00, 0x01];
    // A fixed64 field cut short.
    let short_fixed = vec![0x09, 0x01, 0x02];
    // Over max_record_bytes (64).
    let oversized = transaction(&txn(
        9,
        "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ));
    assert!(oversized.len() > 64);
    // An empty message is valid proto3: every field takes its default.
    let empty: Vec<u8> = Vec::new();

    let records: Vec<(Vec<u8>, Option<&'static str>)> = vec![
        (good1, None),
        (truncated, Some("field runs past the end of the record")),
        (garbage_key, Some("malformed protobuf: bad field key")),
        (empty, None),
        (
            wrong_wire,
            Some("field `country`: wire type does not match the schema"),
        ),
        (bad_utf8, Some("field `country`: invalid UTF-8")),
        (big_merchant, Some("out of range for u32")),
        (group, Some("unsupported wire type 3")),
        (field_zero, Some("field number 0")),
        (short_fixed, Some("runs past the end of the record")),
        (oversized, Some("over the limit of 64 bytes")),
        (good2, None),
    ];
    let mut input = Vec::new();
    let mut bad = Vec::new();
    for (i, (r, why)) in records.iter().enumerate() {
        varint(r.len() as u64, &mut input);
        input.extend_from_slice(r);
        if let Some(reason) = why {
            bad.push(Bad {
                position: i as u64,
                bytes: r.clone(),
                reason,
            });
        }
    }
    for batch_rows in [4096, 1, 5] {
        for shards in [1, 2, 3] {
            let o = run_pipeline(&proto_pipeline(batch_rows, 64), &input, shards, "txn_id");
            assert_eq!(o.summary.source_records, records.len() as u64);
            check_dead_letters(&o, "decode_pb", &bad);
            let lines: Vec<String> = o.rows.iter().map(|r| r.to_string()).collect();
            assert_eq!(
                lines,
                [
                    r#"{"amount_cents":0,"card_id":0,"country":"","merchant_id":0,"ts":0,"txn_id":0}"#,
                    r#"{"amount_cents":-1234,"card_id":77,"country":"GB","merchant_id":4000,"ts":1700000001000,"txn_id":1000}"#,
                    r#"{"amount_cents":-1234,"card_id":77,"country":"DE","merchant_id":4000,"ts":1700000001001,"txn_id":1001}"#,
                ],
                "batch_rows={batch_rows} shards={shards}"
            );
            assert_eq!(
                o.rows.len() as u64 + o.summary.dead_letters,
                records.len() as u64
            );
        }
    }
}

#[test]

fn truncated_final_frame_keeps_its_bytes() {
    let good = transaction(&txn(1000, "GB"));
    let mut input = Vec::new();
    varint(good.len() as u64, &mut input);
    input.extend_from_slice(&good);
    // The last frame announces 20 bytes and has 5.
    let tail = [20u8, 0x08, 0x01, 0x10, 0x02, 0x18];
    input.extend_from_slice(&tail);
    for shards in [1, 2] {
        let o = run_pipeline(&proto_pipeline(4096, 1 << 20), &input, shards, "txn_id");
        assert_eq!(o.rows.len(), 1);
        assert_eq!(o.summary.source_records, 2);
        check_dead_letters(
            &o,
            "decode_pb",
            &[Bad {
                position: 1,
                bytes: tail.to_vec(),
                reason: "truncated length-delimited record at end of input",
            }],
        );
    }
}
