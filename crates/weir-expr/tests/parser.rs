//! Parser: precedence, associativity, literals, positions and syntax errors.

use weir_expr::{parse, BinaryOp, Expr, Literal};

fn show(src: &str) -> String {
    parse(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .to_string()
}

fn syntax_error(src: &str) -> (String, Option<usize>) {
    let e = parse(src).expect_err(src);
    assert!(
        matches!(e, weir_expr::ExprError::Syntax { .. }),
        "{src}: {e:?}"
    );
    (e.to_string(), e.position())
}

#[test]
fn precedence() {
    assert_eq!(show("a OR b AND c"), "(a OR (b AND c))");
    assert_eq!(show("a AND b OR c"), "((a AND b) OR c)");
    assert_eq!(show("NOT a = b"), "(NOT (a = b))");
    assert_eq!(show("NOT a AND b"), "((NOT a) AND b)");
    assert_eq!(show("NOT NOT a"), "(NOT (NOT a))");
    assert_eq!(show("a + b * c - d"), "((a + (b * c)) - d)");
    assert_eq!(show("a * b % c / d"), "(((a * b) % c) / d)");
    assert_eq!(show("-a * b"), "((- a) * b)");
    assert_eq!(show("a || b = c"), "((a || b) = c)");
    assert_eq!(show("a + b || c"), "((a + b) || c)");
    assert_eq!(show("a < b + 1"), "(a < (b + 1))");
    assert_eq!(
        show("a = 1 OR b IS NOT NULL AND c IN (1, 2)"),
        "((a = 1) OR ((b IS NOT NULL) AND (c IN (1, 2))))"
    );
    assert_eq!(
        show("x BETWEEN 1 AND 2 AND y"),
        "((x BETWEEN 1 AND 2) AND y)"
    );
    assert_eq!(
        show("x NOT BETWEEN a + 1 AND b * 2"),
        "(x NOT BETWEEN (a + 1) AND (b * 2))"
    );
    assert_eq!(
        show("s NOT LIKE 'a%' OR s LIKE 'b_'"),
        "((s NOT LIKE 'a%') OR (s LIKE 'b_'))"
    );
    assert_eq!(
        show("x NOT IN (1, 2) = FALSE"),
        "((x NOT IN (1, 2)) = FALSE)"
    );
    assert_eq!(show("x IS NULL OR NOT y"), "((x IS NULL) OR (NOT y))");
}

#[test]
fn associativity_and_grouping() {
    assert_eq!(show("a - b - c"), "((a - b) - c)");
    assert_eq!(show("a / b / c"), "((a / b) / c)");
    assert_eq!(show("a / (b / c)"), "(a / (b / c))");
    assert_eq!(show("((a))"), "a");
    assert_eq!(show("a = b = c"), "((a = b) = c)");
}

#[test]
fn literals_and_signs() {
    let lit = |src: &str| match parse(src).expect(src) {
        Expr::Literal { value, .. } => value,
        other => panic!("{src}: not a literal: {other:?}"),
    };
    assert_eq!(lit("42"), Literal::Int(42));
    assert_eq!(lit("-5"), Literal::Int(-5));
    assert_eq!(lit("- 2.5"), Literal::Float(-2.5));
    assert_eq!(lit("+7"), Literal::Int(7));
    assert_eq!(lit("1e3"), Literal::Float(1000.0));
    assert_eq!(lit(".25"), Literal::Float(0.25));
    assert_eq!(lit("2.5E-1"), Literal::Float(0.25));
    assert_eq!(lit("-9223372036854775808"), Literal::Int(i64::MIN));
    assert_eq!(lit("'it''s'"), Literal::Str("it's".into()));
    assert_eq!(lit("''"), Literal::Str(String::new()));
    assert_eq!(lit("true"), Literal::Bool(true));
    assert_eq!(lit("False"), Literal::Bool(false));
    assert_eq!(lit("null"), Literal::Null);
    assert_eq!(show("2 - -3"), "(2 - (-3))");
    assert_eq!(show("- - 3"), "(- (-3))");
}

#[test]
fn identifiers_keywords_and_calls() {
    assert_eq!(show("a and not b"), "(a AND (NOT b))");
    assert_eq!(show("\"weird col\" + 1"), "(\"weird col\" + 1)");
    assert_eq!(show("\"and\" OR x"), "(\"and\" OR x)");
    assert_eq!(show("Abs(x)"), "abs(x)");
    assert_eq!(show("coalesce(a, b, 0)"), "coalesce(a, b, 0)");
    assert_eq!(show("cast(x as double precision)"), "CAST(x AS DOUBLE)");
    assert_eq!(show("CAST(x AS varchar(20))"), "CAST(x AS VARCHAR)");
    assert_eq!(show("CAST(x AS INTEGER)"), "CAST(x AS BIGINT)");
    assert_eq!(show("CAST(x AS bool)"), "CAST(x AS BOOLEAN)");
    assert_eq!(
        show("CASE x WHEN 1 THEN 'a' WHEN 2 THEN 'b' ELSE 'c' END"),
        "CASE x WHEN 1 THEN 'a' WHEN 2 THEN 'b' ELSE 'c' END"
    );
    assert_eq!(
        show("case when a > 0 then 1 end"),
        "CASE WHEN (a > 0) THEN 1 END"
    );
    assert_eq!(show("a -- comment\n + 1"), "(a + 1)");
    assert_eq!(show("amount_cents_2 <> _x"), "(amount_cents_2 <> _x)");
}

#[test]
fn ast_shape_and_positions() {
    let e = parse("a  +  1").expect("parses");
    assert_eq!(
        e,
        Expr::Binary {
            op: BinaryOp::Add,
            left: Box::new(Expr::Column {
                name: "a".into(),
                position: 0
            }),
            right: Box::new(Expr::Literal {
                value: Literal::Int(1),
                position: 6
            }),
            position: 3,
        }
    );
    let e = parse("x NOT IN (1)").expect("parses");
    assert_eq!(e.position(), 2);
    let e = parse("'é' || zz").expect("parses");
    match e {
        Expr::Binary {
            right, position, ..
        } => {
            assert_eq!(position, 4);
            assert_eq!(right.position(), 7);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn display_round_trips() {
    for src in [
        "a + b * -c",
        "CASE WHEN x IS NULL THEN 'n''a' ELSE lower(s) END",
        "x NOT BETWEEN -1.5 AND 2e-3 OR y IN (1, NULL, -9223372036854775808)",
        "CAST(\"my col\" AS DOUBLE) / 10000",
        "NOT (a LIKE 'x%') AND - (b) > 0",
    ] {
        let once = show(src);
        assert_eq!(show(&once), once, "{src}");
    }
}

#[test]
fn syntax_errors() {
    assert_eq!(
        syntax_error("(amount_cents)) > 0"),
        ("unexpected token \")\" at position 14".into(), Some(14))
    );
    assert_eq!(
        syntax_error(""),
        ("unexpected end of input at position 0".into(), Some(0))
    );
    assert_eq!(
        syntax_error("amount_cents + "),
        ("unexpected end of input at position 15".into(), Some(15))
    );
    assert_eq!(
        syntax_error("(a"),
        (
            "expected \")\" but found end of input at position 2".into(),
            Some(2)
        )
    );
    assert_eq!(
        syntax_error("a b"),
        ("unexpected token \"b\" at position 2".into(), Some(2))
    );
    assert_eq!(
        syntax_error("AND x"),
        ("unexpected token \"AND\" at position 0".into(), Some(0))
    );
    assert_eq!(
        syntax_error("CASE END"),
        (
            "expected WHEN but found \"END\" at position 5".into(),
            Some(5)
        )
    );
    assert_eq!(syntax_error("x IN ()").1, Some(6));
    assert_eq!(syntax_error("f(1,)").1, Some(4));
    assert_eq!(syntax_error("a IS 5").1, Some(5));
    assert_eq!(syntax_error("x BETWEEN 1 OR 2").1, Some(12));
    assert_eq!(syntax_error("CAST(x DOUBLE)").1, Some(7));
    assert_eq!(syntax_error("a == b").1, Some(3));
    assert_eq!(
        syntax_error("'abc").0,
        "unterminated string literal starting at position 0"
    );
    assert_eq!(
        syntax_error("99999999999999999999").0,
        "integer literal 99999999999999999999 is out of range for BIGINT at position 0 \
         (write it as a DOUBLE, e.g. 99999999999999999999.0)"
    );
    assert_eq!(
        syntax_error("x + 1 ; drop").0,
        "unexpected character ';' at position 6"
    );
    assert!(
        syntax_error(&format!("{}1{}", "(".repeat(500), ")".repeat(500)))
            .0
            .contains("nested too deeply")
    );
}
