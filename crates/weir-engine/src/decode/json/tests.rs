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
