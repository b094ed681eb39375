//! Type checking: result types, referenced columns, and error messages with
//! positions.

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use weir_expr::{compile, compile_predicate, sql_type_name, ExprError};

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("txn_id", DataType::Utf8, false),
        Field::new("card_id", DataType::Int64, false),
        Field::new("amount_cents", DataType::Int64, true),
        Field::new("merchant", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new("is_online", DataType::Boolean, true),
        Field::new("qty", DataType::Int32, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ])
}

fn error(src: &str) -> ExprError {
    compile(src, &schema()).expect_err(src)
}

/// (message, position) of a compile error.
fn msg(src: &str) -> (String, Option<usize>) {
    let e = error(src);
    (e.to_string(), e.position())
}

#[test]
fn result_types() {
    let ty = |src: &str| compile(src, &schema()).expect(src).data_type().clone();
    assert_eq!(ty("amount_cents + 1"), DataType::Int64);
    assert_eq!(ty("qty * 2"), DataType::Int64);
    assert_eq!(ty("qty"), DataType::Int64);
    assert_eq!(ty("amount_cents / 2"), DataType::Int64);
    assert_eq!(ty("amount_cents / 2.0"), DataType::Float64);
    assert_eq!(
        ty("CAST(amount_cents AS DOUBLE) / 10000"),
        DataType::Float64
    );
    assert_eq!(ty("sqrt(amount_cents)"), DataType::Float64);
    assert_eq!(ty("abs(amount_cents)"), DataType::Int64);
    assert_eq!(ty("round(score, 2)"), DataType::Float64);
    assert_eq!(ty("merchant || '!'"), DataType::Utf8);
    assert_eq!(ty("length(merchant)"), DataType::Int64);
    assert_eq!(ty("amount_cents > 0 AND is_online"), DataType::Boolean);
    assert_eq!(
        ty("CASE WHEN is_online THEN 1 ELSE 2.5 END"),
        DataType::Float64
    );
    assert_eq!(ty("coalesce(amount_cents, score)"), DataType::Float64);
    assert_eq!(ty("NULL"), DataType::Boolean);
    assert_eq!(ty("CAST(NULL AS VARCHAR)"), DataType::Utf8);
}

#[test]
fn referenced_columns() {
    let e = compile(
        "score * amount_cents + amount_cents > 0 AND merchant <> 'x'",
        &schema(),
    )
    .expect("compiles");
    assert_eq!(e.columns(), ["score", "amount_cents", "merchant"]);
    let e = compile("1 + 2", &schema()).expect("compiles");
    assert!(e.columns().is_empty());
}

#[test]
fn unknown_column() {
    let e = error("amout_cents > 0");
    assert_eq!(
        e.to_string(),
        "unknown column \"amout_cents\" (available: txn_id, card_id, amount_cents, merchant, \
         score, is_online, qty, ts); did you mean \"amount_cents\"?"
    );
    assert_eq!(e.position(), Some(0));
    assert!(matches!(e, ExprError::UnknownColumn { ref name, .. } if name == "amout_cents"));
    // case-sensitive, with a hint
    let (m, p) = msg("card_id = 1 OR Merchant = 'x'");
    assert!(
        m.starts_with("unknown column \"Merchant\" (available: "),
        "{m}"
    );
    assert!(m.ends_with("did you mean \"merchant\"?"), "{m}");
    assert_eq!(p, Some(15));
    // no hint when nothing is close
    let (m, _) = msg("zzzzzz");
    assert!(!m.contains("did you mean"), "{m}");
}

#[test]
fn operator_type_errors_point_at_the_operator() {
    assert_eq!(
        msg("merchant = 5"),
        ("cannot compare VARCHAR with BIGINT".into(), Some(9))
    );
    assert_eq!(
        msg("amount_cents > 'x'"),
        ("cannot compare BIGINT with VARCHAR".into(), Some(13))
    );
    assert_eq!(
        msg("is_online < 1.5"),
        ("cannot compare BOOLEAN with DOUBLE".into(), Some(10))
    );
    assert_eq!(
        msg("1 + 'a'"),
        (
            "cannot apply operator + to BIGINT and VARCHAR".into(),
            Some(2)
        )
    );
    assert_eq!(
        msg("is_online * 2"),
        (
            "cannot apply operator * to BOOLEAN and BIGINT".into(),
            Some(10)
        )
    );
    assert_eq!(
        msg("-merchant"),
        ("cannot apply unary - to VARCHAR".into(), Some(0))
    );
    assert_eq!(
        msg("NOT amount_cents"),
        (
            "argument of NOT must be BOOLEAN, found BIGINT".into(),
            Some(0)
        )
    );
    assert_eq!(
        msg("is_online AND amount_cents"),
        (
            "argument of AND must be BOOLEAN, found BIGINT".into(),
            Some(14)
        )
    );
    assert_eq!(
        msg("score OR is_online"),
        (
            "argument of OR must be BOOLEAN, found DOUBLE".into(),
            Some(0)
        )
    );
    assert_eq!(
        msg("1 || 2"),
        (
            "operator || expects VARCHAR operands, found BIGINT and BIGINT".into(),
            Some(2)
        )
    );
    assert_eq!(
        msg("merchant LIKE 5"),
        (
            "LIKE expects VARCHAR operands, found BIGINT".into(),
            Some(9)
        )
    );
    assert_eq!(
        msg("amount_cents IN (1, 'a')"),
        (
            "IN list item of type VARCHAR is not comparable with BIGINT".into(),
            Some(20)
        )
    );
    assert_eq!(
        msg("score BETWEEN 'a' AND 'b'"),
        (
            "cannot compare DOUBLE with VARCHAR and VARCHAR in BETWEEN".into(),
            Some(6)
        )
    );
}

#[test]
fn case_and_cast_errors() {
    assert_eq!(
        msg("CASE WHEN amount_cents THEN 1 END"),
        (
            "CASE WHEN condition must be BOOLEAN, found BIGINT".into(),
            Some(10)
        )
    );
    assert_eq!(
        msg("CASE WHEN is_online THEN 'a' ELSE 1 END"),
        (
            "CASE branches have incompatible types VARCHAR and BIGINT".into(),
            Some(34)
        )
    );
    assert_eq!(
        msg("CASE merchant WHEN 1 THEN 2 END"),
        ("cannot compare VARCHAR with BIGINT".into(), Some(19))
    );
    let e = error("CAST(amount_cents AS DECIMAL)");
    assert!(matches!(e, ExprError::Type { .. }));
    assert!(e.to_string().starts_with("unknown type \"DECIMAL\""), "{e}");
    assert_eq!(e.position(), Some(21));
}

#[test]
fn function_errors() {
    let e = error("sqr(amount_cents)");
    assert_eq!(e.to_string(), "unknown function \"sqr\"");
    assert_eq!(e.position(), Some(0));
    assert!(matches!(e, ExprError::UnknownFunction { .. }));
    assert_eq!(
        msg("round(score, 1, 2)"),
        (
            "function round expects 1 or 2 arguments, got 3".into(),
            Some(0)
        )
    );
    assert_eq!(
        msg("1 + abs()"),
        ("function abs expects 1 argument, got 0".into(), Some(4))
    );
    assert_eq!(
        msg("coalesce()"),
        (
            "function coalesce expects at least 1 argument, got 0".into(),
            Some(0)
        )
    );
    assert_eq!(
        msg("replace(merchant, 'a')"),
        (
            "function replace expects 3 arguments, got 2".into(),
            Some(0)
        )
    );
    assert_eq!(
        msg("lower(amount_cents)"),
        (
            "function lower expects a VARCHAR argument, found BIGINT".into(),
            Some(6)
        )
    );
    assert_eq!(
        msg("SQRT(merchant)"),
        (
            "function sqrt expects a numeric argument, found VARCHAR".into(),
            Some(5)
        )
    );
    assert_eq!(
        msg("round(score, 1.5)"),
        (
            "function round expects a BIGINT digits argument, found DOUBLE".into(),
            Some(13)
        )
    );
    assert_eq!(
        msg("substr(merchant, '1')"),
        (
            "function substr expects a BIGINT argument, found VARCHAR".into(),
            Some(17)
        )
    );
    assert_eq!(
        msg("greatest(score, merchant)"),
        (
            "function greatest has arguments of incompatible types DOUBLE and VARCHAR".into(),
            Some(16)
        )
    );
    assert_eq!(
        msg("mod(score, 'x')"),
        (
            "function mod expects numeric arguments, found DOUBLE and VARCHAR".into(),
            Some(0)
        )
    );
}

#[test]
fn unsupported_column_type() {
    let (m, p) = msg("ts > 0");
    assert!(
        m.starts_with("column \"ts\" has unsupported type TIMESTAMP"),
        "{m}"
    );
    assert_eq!(p, Some(0));
}

#[test]
fn predicates_must_be_boolean() {
    let e = compile_predicate("amount_cents / 100.0", &schema()).expect_err("not boolean");
    assert_eq!(e.to_string(), "expected BOOLEAN predicate, found DOUBLE");
    assert_eq!(e.position(), Some(13));
    let e = compile_predicate("merchant", &schema()).expect_err("not boolean");
    assert_eq!(e.to_string(), "expected BOOLEAN predicate, found VARCHAR");
    assert!(compile_predicate("amount_cents > 0 AND NOT is_online", &schema()).is_ok());
    assert!(compile_predicate("NULL", &schema()).is_ok());
    // evaluate_predicate on a non-boolean expression is an error, not a panic
    let e = compile("amount_cents", &schema()).expect("compiles");
    let batch = arrow_array::RecordBatch::new_empty(std::sync::Arc::new(schema()));
    assert!(e.evaluate_predicate(&batch).is_err());
}

#[test]
fn sql_type_names() {
    assert_eq!(sql_type_name(&DataType::Int64), "BIGINT");
    assert_eq!(sql_type_name(&DataType::Int32), "INTEGER");
    assert_eq!(sql_type_name(&DataType::Float64), "DOUBLE");
    assert_eq!(sql_type_name(&DataType::Float32), "REAL");
    assert_eq!(sql_type_name(&DataType::Utf8), "VARCHAR");
    assert_eq!(sql_type_name(&DataType::Boolean), "BOOLEAN");
    assert_eq!(sql_type_name(&DataType::UInt64), "UBIGINT");
    assert_eq!(
        sql_type_name(&DataType::Timestamp(TimeUnit::Microsecond, None)),
        "TIMESTAMP"
    );
}

#[test]
fn syntax_errors_surface_through_compile() {
    let e = error("amount_cents >");
    assert!(matches!(e, ExprError::Syntax { .. }));
    assert_eq!(e.position(), Some(14));
}
