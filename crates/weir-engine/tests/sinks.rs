//! Route steps and every sink kind: records reach the right sinks, in the
//! right encoding.

mod common;
use common::without_id;

use std::sync::Arc;

use weir_engine::{run, Input, RunOptions};
use weir_test_support::pipelines::{transaction_proto, TRANSACTION_FIELDS};

const PIPELINE: &str = r#"
name = "routes"

[[sources]]
name = "in"
type = "memory"

[[steps]]
name = "decode"
type = "decode"
input = "in"
format = "json"
FIELDS

[[steps]]
name = "split"
type = "route"
input = "decode"
routes = { big = "amount_cents >= 1000", small = "amount_cents < 1000", gb = "country = 'GB'" }

[[steps]]
name = "tagged"
type = "derive"
input = "split.big"
columns = { euros = "amount_cents / 100.0", label = "CASE WHEN country IN ('GB', 'IE') THEN 'uk' ELSE lower(country) END" }

[[sinks]]
name = "big"
type = "file"
input = "tagged"
path = "big.pb"
format = "protobuf"
proto = "PROTO"
message = "weir.examples.fraud.Transaction"
columns = ["txn_id", "card_id", "amount_cents", "country"]

[[sinks]]
name = "big_json"
type = "file"
input = "tagged"
path = "big.jsonl"
columns = ["txn_id", "euros", "label"]

[[sinks]]
name = "small"
type = "discard"
input = "split.small"

[[sinks]]
name = "gb"
type = "file"
input = "split.gb"
path = "gb.jsonl"
columns = ["txn_id"]
"#;

fn varint(b: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for i in 0..10 {
        let byte = b[0];
        *b = &b[1..];
        v |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

#[test]
fn routes_feed_protobuf_json_and_discard_sinks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let proto = transaction_proto();
    let text = PIPELINE
        .replace("PROTO", &proto.display().to_string())
        .replace("FIELDS", TRANSACTION_FIELDS);
    let p = weir_config::parse(&text, dir.path()).expect("valid pipeline");
    let input = concat!(
        r#"{"txn_id":1,"card_id":7,"merchant_id":1,"amount_cents":500,"country":"GB","ts":1}"#,
        "\n",
        r#"{"txn_id":2,"card_id":8,"merchant_id":1,"amount_cents":1500,"country":"DE","ts":2}"#,
        "\n",
        r#"{"txn_id":3,"card_id":9,"merchant_id":1,"amount_cents":2500,"country":"GB","ts":3}"#,
        "\n",
        r#"{"txn_id":4,"card_id":9,"merchant_id":1,"amount_cents":10,"country":"US","ts":4}"#,
        "\n",
    );
    for shards in [1, 2] {
        let summary = run(
            &p,
            RunOptions {
                shards: Some(shards),
                input: Input::Bytes(Arc::new(input.as_bytes().to_vec())),
                ..Default::default()
            },
        )
        .expect("run");
        let count = |name: &str| {
            summary
                .sinks
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.records)
        };
        assert_eq!(count("big"), Some(2));
        assert_eq!(count("big_json"), Some(2));
        assert_eq!(count("small"), Some(2));
        assert_eq!(count("gb"), Some(2));

        let mut json: Vec<String> = std::fs::read_to_string(dir.path().join("big.jsonl"))
            .expect("json sink")
            .lines()
            .map(String::from)
            .collect();
        json.sort();
        // The output id is the record's source position.
        assert!(json[0].ends_with(r#","_id":1}"#), "{}", json[0]);
        let json: Vec<String> = json.iter().map(|l| without_id(l)).collect();
        assert_eq!(
            json,
            vec![
                r#"{"txn_id":2,"euros":15.0,"label":"de"}"#,
                r#"{"txn_id":3,"euros":25.0,"label":"uk"}"#
            ]
        );

        let mut gb: Vec<String> = std::fs::read_to_string(dir.path().join("gb.jsonl"))
            .expect("gb sink")
            .lines()
            .map(without_id)
            .collect();
        gb.sort();
        assert_eq!(gb, vec![r#"{"txn_id":1}"#, r#"{"txn_id":3}"#]);

        // Length-delimited protobuf: decode field numbers and values by hand.
        let bytes = std::fs::read(dir.path().join("big.pb")).expect("protobuf sink");
        let mut b = bytes.as_slice();
        let mut messages = Vec::new();
        while !b.is_empty() {
            let len = varint(&mut b) as usize;
            let (mut m, rest) = b.split_at(len);
            b = rest;
            let mut fields = Vec::new();
            while !m.is_empty() {
                let key = varint(&mut m);
                match key & 7 {
                    0 => fields.push((key >> 3, varint(&mut m).to_string())),
                    2 => {
                        let n = varint(&mut m) as usize;
                        fields.push((key >> 3, String::from_utf8(m[..n].to_vec()).expect("utf-8")));
                        m = &m[n..];
                    }
                    other => panic!("unexpected wire type {other}"),
                }
            }
            messages.push(fields);
        }
        messages.sort();
        let f = |n: u64, v: &str| (n, v.to_string());
        assert_eq!(
            messages,
            vec![
                vec![f(1, "2"), f(2, "8"), f(4, "1500"), f(5, "DE")],
                vec![f(1, "3"), f(2, "9"), f(4, "2500"), f(5, "GB")],
            ]
        );
    }
}
