//! Checks against the reference script's published results and output.

use weir_workloads::fraud_v1::{
    alerts, encode_json, encode_protobuf, events, score, write_json, write_protobuf_delimited,
    Generator, Reference, Transaction, BASE_TS, COUNTRIES,
};

/// `python3 shared/workloads/fraud_v1_reference.py generate 3`
const SCRIPT_FIRST_3: &str = concat!(
    r#"{"txn_id":0,"card_id":5413,"merchant_id":2291,"amount_cents":63858,"country":"MX","ts":1700000000000}"#,
    "\n",
    r#"{"txn_id":1,"card_id":9062,"merchant_id":4925,"amount_cents":75908,"country":"IN","ts":1700000000001}"#,
    "\n",
    r#"{"txn_id":2,"card_id":4207,"merchant_id":4646,"amount_cents":11398,"country":"NG","ts":1700000000002}"#,
    "\n",
);

#[test]
fn json_matches_script() {
    assert_eq!(
        std::str::from_utf8(&encode_json(3)).unwrap(),
        SCRIPT_FIRST_3
    );
}

#[test]
fn json_integer_formatting() {
    let t = Transaction {
        txn_id: u64::MAX,
        card_id: 0,
        merchant_id: u32::MAX,
        amount_cents: i64::MIN,
        country: "US",
        ts: -5,
    };
    let mut out = Vec::new();
    write_json(&t, &mut out);
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        format!(
            "{{\"txn_id\":{},\"card_id\":0,\"merchant_id\":{},\"amount_cents\":{},\"country\":\"US\",\"ts\":-5}}\n",
            u64::MAX,
            u32::MAX,
            i64::MIN
        )
    );
    // Every digit-count boundary agrees with std formatting.
    for &v in &[0u64, 9, 10, 99, 100, 999, 1000, 12345, 10u64.pow(19)] {
        let t = Transaction { txn_id: v, ..t };
        let mut out = Vec::new();
        write_json(&t, &mut out);
        assert!(out.starts_with(format!("{{\"txn_id\":{v},").as_bytes()));
    }
}

#[test]
fn generator_and_events_agree() {
    let mut g = Generator::new();
    for (i, t) in events(1000).enumerate() {
        let i = i as u64;
        assert_eq!(t, g.next_event(i, BASE_TS + i as i64));
        assert!(t.card_id < 10_000 && t.merchant_id < 5_000);
        assert!(COUNTRIES.contains(&t.country));
    }
}

#[test]
fn score_100k() {
    assert_eq!(
        score(100_000),
        Reference {
            kept: 100_000,
            alerts: 1967,
            checksum: 117_986_728
        }
    );
}

#[test]
fn score_1m() {
    assert_eq!(
        score(1_000_000),
        Reference {
            kept: 999_988,
            alerts: 26_630,
            checksum: 13_608_991_775
        }
    );
}

#[test]
fn alerts_agree_with_score() {
    let a = alerts(100_000);
    let r = score(100_000);
    assert_eq!(a.len() as u64, r.alerts);
    let sum = a.iter().fold(0u64, |s, &(id, _, _)| s.wrapping_add(id));
    assert_eq!(sum, r.checksum);
    assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
    let evs: Vec<Transaction> = events(100_000).collect();
    for &(id, card, p) in &a {
        assert_eq!(evs[id as usize].card_id, card);
        assert!(p > 0.9 && p <= 1.0);
    }
}

// --- Protobuf round trip with a minimal decoder --------------------------

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
        assert!(shift < 64, "varint too long");
    }
}

/// Decodes one length-delimited message; checks fields are in order and
/// no default-valued field is present (canonical proto3).
fn decode(buf: &[u8], pos: &mut usize) -> Transaction {
    let len = read_varint(buf, pos) as usize;
    let end = *pos + len;
    let mut t = Transaction {
        txn_id: 0,
        card_id: 0,
        merchant_id: 0,
        amount_cents: 0,
        country: "",
        ts: 0,
    };
    let mut last_field = 0;
    while *pos < end {
        let key = read_varint(buf, pos);
        let (field, wire) = (key >> 3, key & 7);
        assert!(field > last_field, "fields out of order or repeated");
        last_field = field;
        if field == 5 {
            assert_eq!(wire, 2);
            let n = read_varint(buf, pos) as usize;
            let s = std::str::from_utf8(&buf[*pos..*pos + n]).unwrap();
            *pos += n;
            assert!(!s.is_empty(), "empty string must be omitted");
            t.country = COUNTRIES
                .iter()
                .copied()
                .find(|c| *c == s)
                .expect("known country");
            continue;
        }
        assert_eq!(wire, 0);
        let v = read_varint(buf, pos);
        assert_ne!(v, 0, "zero field {field} must be omitted");
        match field {
            1 => t.txn_id = v,
            2 => t.card_id = v,
            3 => t.merchant_id = u32::try_from(v).unwrap(),
            4 => t.amount_cents = v as i64,
            6 => t.ts = v as i64,
            f => panic!("unknown field {f}"),
        }
    }
    assert_eq!(*pos, end, "message overran its length");
    t
}

#[test]
fn protobuf_round_trip() {
    // The 1M stream drops 12 zero-amount events: find the first one.
    let zero = events(1_000_000)
        .find(|t| t.amount_cents == 0)
        .expect("a zero-amount event");
    let mut cases: Vec<Transaction> = events(5).collect();
    assert_eq!(cases[0].txn_id, 0);
    cases.push(zero);
    cases.push(Transaction {
        txn_id: 0,
        card_id: 0,
        merchant_id: 0,
        amount_cents: 0,
        country: "",
        ts: 0,
    });
    cases.push(Transaction {
        txn_id: u64::MAX,
        card_id: 1 << 40,
        merchant_id: u32::MAX,
        amount_cents: -1,
        country: "SG",
        ts: i64::MIN,
    });
    let mut buf = Vec::new();
    for t in &cases {
        write_protobuf_delimited(t, &mut buf);
    }
    // The all-default message is just its length prefix, 0.
    let mut pos = 0;
    for t in &cases {
        assert_eq!(decode(&buf, &mut pos), *t);
    }
    assert_eq!(pos, buf.len());

    // Event 0 by hand: txn_id omitted, then fields 2, 3, 4, 5, 6.
    let mut one = Vec::new();
    write_protobuf_delimited(&cases[0], &mut one);
    assert!(one[1] == 0x10, "txn_id 0 omitted, first tag is card_id");
    let mut empty = Vec::new();
    write_protobuf_delimited(&cases[6], &mut empty);
    assert_eq!(empty, [0]);

    // Whole-input encoder agrees with the per-event one.
    let all = encode_protobuf(1000);
    let mut pos = 0;
    for t in events(1000) {
        assert_eq!(decode(&all, &mut pos), t);
    }
    assert_eq!(pos, all.len());
}
