//! Tests of the JSON parser: values, reasons, UTF-8 and numbers.

use super::*;

fn fields() -> Vec<FieldDecl> {
    vec![
        FieldDecl {
            name: "id".into(),
            kind: Kind::U64,
            optional: false,
        },
        FieldDecl {
            name: "amount".into(),
            kind: Kind::I64,
            optional: false,
        },
        FieldDecl {
            name: "country".into(),
            kind: Kind::Str,
            optional: false,
        },
        FieldDecl {
            name: "score".into(),
            kind: Kind::F64,
            optional: true,
        },
    ]
}

fn parse(rec: &str) -> Result<(Vec<Slot>, Vec<u8>), String> {
    let mut p = JsonParser::new(fields());
    let mut slots = vec![Slot::Empty; 4];
    p.parse(rec.as_bytes(), &mut slots)?;
    Ok((slots, p.strings.clone()))
}

#[test]
fn parses_declared_fields_and_skips_others() {
    let (s, strings) =
        parse(r#" {"x":[1,{"y":"}"}], "id":7,"amount":-5,"country":"G\u00e9\n", "z":null} "#)
            .unwrap();
    assert_eq!(s[0], Slot::UInt(7));
    assert_eq!(s[1], Slot::Int(-5));
    let Slot::Str(a, b) = s[2] else {
        panic!("not a string")
    };
    assert_eq!(
        std::str::from_utf8(&strings[a as usize..b as usize]).unwrap(),
        "Gé\n"
    );
    assert_eq!(s[3], Slot::Empty);
}

#[test]
fn rejects_with_reasons() {
    let cases = [
        (r#"{"id":1,"amount":2}"#, "missing field `country`"),
        (
            r#"{"id":-1,"amount":2,"country":"x"}"#,
            "out of range for u64",
        ),
        (r#"{"id":1.5,"amount":2,"country":"x"}"#, "non-integer"),
        (
            r#"{"id":"1","amount":2,"country":"x"}"#,
            "expected u64, found a string",
        ),
        (
            r#"{"id":1,"amount":99999999999999999999,"country":"x"}"#,
            "out of range for i64",
        ),
        (r#"{"id":1,"amount":2,"country":"x"} x"#, "end of record"),
        (r#"{"id":1,"amount":2,"country":"x""#, "expected ',' or '}'"),
        (r#"[1,2]"#, "JSON object"),
        (r#"{"id":1,"amount":null,"country":"x"}"#, "is null"),
        ("", "found end of record"),
    ];
    for (rec, want) in cases {
        let err = parse(rec).unwrap_err();
        assert!(err.contains(want), "{rec}: {err} (wanted {want})");
    }
    let mut p = JsonParser::new(fields());
    let mut slots = vec![Slot::Empty; 4];
    let err = p
        .parse(b"{\"id\":1,\"amount\":2,\"country\":\"\xff\"}", &mut slots)
        .unwrap_err();
    assert!(err.contains("UTF-8"), "{err}");
}

#[test]
fn floats_parse_exactly() {
    let (s, _) = parse(r#"{"id":1,"amount":2,"country":"x","score":0.1e1}"#).unwrap();
    assert_eq!(s[3], Slot::Float(1.0));
    let (s, _) = parse(r#"{"id":1,"amount":2,"country":"x","score":3}"#).unwrap();
    assert_eq!(s[3], Slot::Float(3.0));
}

#[test]
fn invalid_utf8_is_reported_where_it_is() {
    let mut p = JsonParser::new(fields());
    let mut slots = vec![Slot::Empty; 4];
    // In a declared string, a long one (past the short scan), an
    // undeclared key, an undeclared value, and outside any string.
    let long = [&[b'a'; 40][..], b"\xc3("].concat();
    let cases: Vec<(Vec<u8>, usize)> = vec![
        (
            b"{\"id\":1,\"amount\":2,\"country\":\"ab\xe9\"}".to_vec(),
            32,
        ),
        (
            [
                b"{\"id\":1,\"amount\":2,\"country\":\"".as_slice(),
                &long,
                b"\"}",
            ]
            .concat(),
            70,
        ),
        (
            b"{\"\xff\":1,\"id\":1,\"amount\":2,\"country\":\"x\"}".to_vec(),
            2,
        ),
        (
            b"{\"id\":1,\"zz\":[\"\xc0\xaf\"],\"amount\":2,\"country\":\"x\"}".to_vec(),
            15,
        ),
        (b"{\"id\":1\xff,\"amount\":2,\"country\":\"x\"}".to_vec(), 7),
    ];
    for (rec, at) in cases {
        let err = p.parse(&rec, &mut slots).unwrap_err();
        assert_eq!(err, format!("invalid UTF-8 at byte {at}"), "{rec:?}");
    }
    // Valid multi-byte text, short and long, parses.
    let text = format!("Grüße {}€", "x".repeat(40));
    let rec = format!(r#"{{"id":1,"amount":2,"country":"{text}"}}"#);
    p.parse(rec.as_bytes(), &mut slots).unwrap();
    let Slot::Str(a, b) = slots[2] else {
        panic!("not a string")
    };
    assert_eq!(&p.strings[a as usize..b as usize], text.as_bytes());
}

#[test]
fn control_bytes_in_long_strings_are_rejected() {
    let rec = format!(
        r#"{{"id":1,"amount":2,"country":"{}{}"}}"#,
        "a".repeat(40),
        '\u{1}'
    );
    let err = parse(&rec).unwrap_err();
    assert!(err.contains("control byte 0x01"), "{err}");
}

proptest::proptest! {
    #[test]
    fn numbers_parse_as_the_standard_library_does(v: u64, zeros in 0usize..3, neg: bool) {
        let text = v.to_string();
        let (m, overflow) = magnitude(text.as_bytes());
        proptest::prop_assert_eq!((m, overflow), (v, false));
        // Read in place, after other bytes (digits among them).
        let placed = format!("{}{text}", "7".repeat(zeros * 4 + 1));
        let start = placed.len() - text.len();
        proptest::prop_assert_eq!(magnitude_in(placed.as_bytes(), start, placed.len()), (v, false));
        // Longer runs, up to and past u64::MAX, flag overflow exactly.
        let long = format!("{text}{}", "9".repeat(zeros * 5));
        let want = long.parse::<u64>();
        let (m, overflow) = magnitude(long.as_bytes());
        proptest::prop_assert_eq!(overflow, want.is_err());
        if let Ok(w) = want {
            proptest::prop_assert_eq!(m, w);
        }
        let rec = format!(r#"{{"id":1,"amount":{}{long},"country":"x"}}"#, if neg { "-" } else { "" });
        let want = format!("{}{long}", if neg { "-" } else { "" }).parse::<i64>();
        match (parse(&rec), want) {
            (Ok((s, _)), Ok(w)) => proptest::prop_assert_eq!(s[1], Slot::Int(w)),
            (Err(e), Err(_)) => proptest::prop_assert!(e.contains("out of range"), "{}", e),
            (got, want) => proptest::prop_assert!(false, "{:?} against {:?}", got.map(|g| g.0), want),
        }
    }
}

/// One record in the shape of the stream at hand, or off it: `pick`
/// chooses the key order, the spacing, undeclared and duplicated keys and
/// values the declared types reject.
fn record(pick: &[u8; 8], id: u64, amount: i64, country: &str) -> String {
    let sep = if pick[0].is_multiple_of(8) { ", " } else { "," };
    let colon = if pick[1].is_multiple_of(8) { ": " } else { ":" };
    let id_value = match pick[2] % 16 {
        0 => format!("-{id}"),
        1 => format!("{id}.5"),
        2 => "null".to_string(),
        _ => id.to_string(),
    };
    let amount_value = match pick[3] % 16 {
        0 => format!("\"{amount}\""),
        1 => "99999999999999999999".to_string(),
        _ => amount.to_string(),
    };
    let mut fields = vec![
        format!("\"id\"{colon}{id_value}"),
        format!("\"amount\"{colon}{amount_value}"),
        format!(
            "\"country\"{colon}{}",
            serde_json::to_string(country).unwrap()
        ),
    ];
    match pick[4] % 4 {
        0 => fields.push(format!("\"score\"{colon}{}.25", id % 100)),
        1 => fields.push(format!("\"score\"{colon}null")),
        _ => {}
    }
    if pick[5].is_multiple_of(8) {
        fields.insert(1, format!("\"extra\"{colon}[1,{{\"a\":\"b\"}}]"));
    }
    if pick[6].is_multiple_of(16) {
        fields.swap(0, 2);
    }
    if pick[6] % 16 == 1 {
        fields.push(format!("\"id\"{colon}{}", id / 2));
    }
    let tail = match pick[7] % 32 {
        0 => " ",
        1 => "x",
        _ => "",
    };
    format!("{{{}}}{tail}", fields.join(sep))
}

proptest::proptest! {
    #[test]
    fn digit_runs_are_counted_exactly(bytes in proptest::collection::vec(
        proptest::prop_oneof![b'0'..=b'9', proptest::num::u8::ANY], 0..40)
    ) {
        let want = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        proptest::prop_assert_eq!(digit_run(&bytes), want);
    }

    /// A parser that has learned the stream's shape gives every record
    /// the slots, strings and reason a fresh parser gives it.
    #[test]
    fn a_learned_shape_parses_as_a_fresh_parser_does(
        records in proptest::collection::vec(
            (proptest::array::uniform8(proptest::num::u8::ANY), proptest::num::u64::ANY,
             proptest::num::i64::ANY, "[a-zA-Z\"\\\\é\u{1}]{0,20}"),
            1..60,
        )
    ) {
        let mut reused = JsonParser::new(fields());
        for (pick, id, amount, country) in &records {
            let rec = record(pick, *id, *amount, country);
            let mut slots = vec![Slot::Empty; 4];
            let got = reused.parse(rec.as_bytes(), &mut slots).map(|()| (slots, reused.strings.clone()));
            proptest::prop_assert_eq!(got, parse(&rec), "{}", rec);
        }
    }
}

#[test]
fn a_learned_shape_is_replayed_and_left_when_records_change() {
    let mut p = JsonParser::new(fields());
    let mut slots = vec![Slot::Empty; 4];
    let same = |id: u64| format!(r#"{{"id":{id},"amount":-3,"country":"GB","score":1.5}}"#);
    for id in 0..5 {
        p.parse(same(id).as_bytes(), &mut slots).unwrap();
        assert_eq!(slots[0], Slot::UInt(id));
        assert_eq!(slots[3], Slot::Float(1.5));
    }
    assert_eq!(p.shape.misses(), 0);
    // Another order: the replay gives up, the record still parses.
    let moved = r#"{"amount":4,"id":9,"country":"US"}"#;
    p.parse(moved.as_bytes(), &mut slots).unwrap();
    assert_eq!(
        (slots[0], slots[1], slots[3]),
        (Slot::UInt(9), Slot::Int(4), Slot::Empty)
    );
    assert_eq!(p.shape.misses(), 1);
    // A required field gone: the reason is the general parser's.
    let err = p.parse(br#"{"id":9,"amount":4}"#, &mut slots).unwrap_err();
    assert_eq!(err, "missing field `country`");
}
