//! Property tests: the parser and compiler never panic on arbitrary text,
//! and vectorised evaluation of random arithmetic over random Int64/Float64
//! columns (with NULLs) agrees with a simple row-at-a-time reference.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use proptest::prelude::*;
use std::sync::Arc;

// ---------------------------------------------------------------- no panics

fn fixed_schema() -> Schema {
    Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
    ])
}

fn fixed_batch() -> RecordBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![
            Some(i64::MIN),
            None,
            Some(0),
            Some(7),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(-0.0),
            Some(f64::NAN),
            None,
            Some(1e308),
        ])),
        Arc::new(arrow_array::StringArray::from(vec![
            Some("é%_"),
            None,
            Some(""),
            Some("abc"),
        ])),
        Arc::new(arrow_array::BooleanArray::from(vec![
            Some(true),
            None,
            Some(false),
            None,
        ])),
    ];
    RecordBatch::try_new(Arc::new(fixed_schema()), cols).expect("batch")
}

/// Strings made of expression-ish fragments, so that many of them get past
/// the tokenizer and exercise the parser and type checker.
fn fragments() -> impl Strategy<Value = String> {
    let frag = prop_oneof![
        Just("a"),
        Just("x"),
        Just("s"),
        Just("b"),
        Just("zz"),
        Just("\"a\""),
        Just("0"),
        Just("1"),
        Just("-1"),
        Just("2.5"),
        Just("1e308"),
        Just("9223372036854775807"),
        Just("'%a_'"),
        Just("''"),
        Just("NULL"),
        Just("TRUE"),
        Just("+"),
        Just("-"),
        Just("*"),
        Just("/"),
        Just("%"),
        Just("||"),
        Just("="),
        Just("<>"),
        Just("<"),
        Just(">="),
        Just("AND"),
        Just("OR"),
        Just("NOT"),
        Just("IS"),
        Just("IN"),
        Just("BETWEEN"),
        Just("LIKE"),
        Just("CASE"),
        Just("WHEN"),
        Just("THEN"),
        Just("ELSE"),
        Just("END"),
        Just("CAST"),
        Just("AS"),
        Just("BIGINT"),
        Just("DOUBLE"),
        Just("VARCHAR"),
        Just("BOOLEAN"),
        Just("("),
        Just(")"),
        Just(","),
        Just("abs"),
        Just("round"),
        Just("substr"),
        Just("coalesce"),
        Just("greatest"),
        Just("sqrt"),
        Just("log"),
        Just("power"),
        Just("concat"),
        Just("nullif"),
        Just("strpos"),
        Just("replace"),
        Just("lower"),
        Just("sigmoid"),
        Just("mod"),
    ];
    prop::collection::vec(frag, 0..24).prop_map(|v| v.join(" "))
}

fn no_panic(src: &str) {
    let _ = weir_expr::parse(src);
    let schema = fixed_schema();
    if let Ok(e) = weir_expr::compile(src, &schema) {
        let batch = fixed_batch();
        let out = e
            .evaluate(&batch)
            .expect("evaluation of a compiled expression");
        assert_eq!(out.len(), batch.num_rows());
        assert_eq!(out.data_type(), e.data_type());
        if e.data_type() == &DataType::Boolean {
            let mask = e.evaluate_predicate(&batch).expect("predicate");
            assert_eq!(mask.null_count(), 0);
        }
    }
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_string(src in any::<String>()) {
        let _ = weir_expr::parse(&src);
    }

    #[test]
    fn parse_never_panics_on_ascii_soup(src in "[ -~]{0,64}") {
        no_panic(&src);
    }

    #[test]
    fn compile_and_evaluate_never_panic(src in fragments()) {
        no_panic(&src);
    }
}

// ------------------------------------------------- arithmetic vs reference

#[derive(Debug, Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Lt,
    Eq,
    GtEq,
}

#[derive(Debug, Clone)]
enum E {
    /// Int64 column 0 or 1.
    IntCol(usize),
    /// Float64 column 0 or 1.
    FloatCol(usize),
    Int(i64),
    Float(f64),
    Neg(Box<E>),
    Bin(Op, Box<E>, Box<E>),
    ToDouble(Box<E>),
    ToBigint(Box<E>),
    Abs(Box<E>),
    /// CASE WHEN l cmp r THEN a ELSE b END
    Case(Cmp, Box<E>, Box<E>, Box<E>, Box<E>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum V {
    I(i64),
    F(f64),
}

impl E {
    fn is_float(&self) -> bool {
        match self {
            E::IntCol(_) | E::Int(_) | E::ToBigint(_) => false,
            E::FloatCol(_) | E::Float(_) | E::ToDouble(_) => true,
            E::Neg(a) | E::Abs(a) => a.is_float(),
            E::Bin(_, a, b) => a.is_float() || b.is_float(),
            E::Case(_, _, _, a, b) => a.is_float() || b.is_float(),
        }
    }

    fn sql(&self) -> String {
        match self {
            E::IntCol(k) => format!("i{k}"),
            E::FloatCol(k) => format!("f{k}"),
            E::Int(v) if *v < 0 => format!("({v})"),
            E::Int(v) => v.to_string(),
            E::Float(v) if v.is_sign_negative() => format!("({v:?})"),
            E::Float(v) => format!("{v:?}"),
            E::Neg(a) => format!("(- {})", a.sql()),
            E::Bin(op, a, b) => {
                let sym = match op {
                    Op::Add => "+",
                    Op::Sub => "-",
                    Op::Mul => "*",
                    Op::Div => "/",
                    Op::Mod => "%",
                };
                format!("({} {sym} {})", a.sql(), b.sql())
            }
            E::ToDouble(a) => format!("CAST({} AS DOUBLE)", a.sql()),
            E::ToBigint(a) => format!("CAST({} AS BIGINT)", a.sql()),
            E::Abs(a) => format!("abs({})", a.sql()),
            E::Case(c, l, r, a, b) => {
                let sym = match c {
                    Cmp::Lt => "<",
                    Cmp::Eq => "=",
                    Cmp::GtEq => ">=",
                };
                format!(
                    "CASE WHEN {} {sym} {} THEN {} ELSE {} END",
                    l.sql(),
                    r.sql(),
                    a.sql(),
                    b.sql()
                )
            }
        }
    }
}

fn as_f64(v: V) -> f64 {
    match v {
        V::I(i) => i as f64,
        V::F(f) => f,
    }
}

fn to_float(v: Option<V>, float: bool) -> Option<V> {
    if float {
        v.map(|v| V::F(as_f64(v)))
    } else {
        v
    }
}

struct Row<'a> {
    ints: [&'a [Option<i64>]; 2],
    floats: [&'a [Option<f64>]; 2],
    i: usize,
}

/// Row-at-a-time reference semantics.
fn reference(e: &E, row: &Row<'_>) -> Option<V> {
    match e {
        E::IntCol(k) => row.ints[*k][row.i].map(V::I),
        E::FloatCol(k) => row.floats[*k][row.i].map(V::F),
        E::Int(v) => Some(V::I(*v)),
        E::Float(v) => Some(V::F(*v)),
        E::Neg(a) => match reference(a, row)? {
            V::I(i) => i.checked_neg().map(V::I),
            V::F(f) => Some(V::F(-f)),
        },
        E::Abs(a) => match reference(a, row)? {
            V::I(i) => i.checked_abs().map(V::I),
            V::F(f) => Some(V::F(f.abs())),
        },
        E::ToDouble(a) => reference(a, row).map(|v| V::F(as_f64(v))),
        E::ToBigint(a) => match reference(a, row)? {
            V::I(i) => Some(V::I(i)),
            V::F(f) => {
                let r = f.round_ties_even();
                let lim = 9_223_372_036_854_775_808.0;
                (r >= -lim && r < lim).then_some(V::I(r as i64))
            }
        },
        E::Bin(op, a, b) => {
            let float = e.is_float();
            let x = to_float(reference(a, row), float)?;
            let y = to_float(reference(b, row), float)?;
            match (x, y) {
                (V::I(x), V::I(y)) => match op {
                    Op::Add => x.checked_add(y),
                    Op::Sub => x.checked_sub(y),
                    Op::Mul => x.checked_mul(y),
                    Op::Div => x.checked_div(y),
                    Op::Mod if y == -1 => Some(0),
                    Op::Mod => x.checked_rem(y),
                }
                .map(V::I),
                (V::F(x), V::F(y)) => match op {
                    Op::Add => Some(x + y),
                    Op::Sub => Some(x - y),
                    Op::Mul => Some(x * y),
                    Op::Div => (y != 0.0).then(|| x / y),
                    Op::Mod => (y != 0.0).then(|| x % y),
                }
                .map(V::F),
                _ => unreachable!("operands converted to a common kind"),
            }
        }
        E::Case(c, l, r, a, b) => {
            let cmp_float = l.is_float() || r.is_float();
            let lv = to_float(reference(l, row), cmp_float);
            let rv = to_float(reference(r, row), cmp_float);
            let cond = match (lv, rv) {
                (Some(V::I(x)), Some(V::I(y))) => Some(match c {
                    Cmp::Lt => x < y,
                    Cmp::Eq => x == y,
                    Cmp::GtEq => x >= y,
                }),
                (Some(V::F(x)), Some(V::F(y))) => Some(match c {
                    Cmp::Lt => x < y,
                    Cmp::Eq => x == y,
                    Cmp::GtEq => x >= y,
                }),
                _ => None,
            };
            let float = e.is_float();
            if cond == Some(true) {
                to_float(reference(a, row), float)
            } else {
                to_float(reference(b, row), float)
            }
        }
    }
}

fn int_value() -> impl Strategy<Value = i64> {
    prop_oneof![
        -20i64..20,
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1i64),
        Just(0i64),
        (-4_000_000_000i64..4_000_000_000),
    ]
}

fn float_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-1000i32..1000).prop_map(|v| f64::from(v) / 8.0),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        Just(f64::NAN),
        Just(1e300),
        Just(9.3e18),
    ]
}

fn leaf() -> impl Strategy<Value = E> {
    prop_oneof![
        (0usize..2).prop_map(E::IntCol),
        (0usize..2).prop_map(E::FloatCol),
        int_value().prop_map(E::Int),
        float_value()
            .prop_filter("literal must be finite", |v| v.is_finite())
            .prop_map(E::Float),
    ]
}

fn expr() -> impl Strategy<Value = E> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        let op = prop_oneof![
            Just(Op::Add),
            Just(Op::Sub),
            Just(Op::Mul),
            Just(Op::Div),
            Just(Op::Mod)
        ];
        let cmp = prop_oneof![Just(Cmp::Lt), Just(Cmp::Eq), Just(Cmp::GtEq)];
        prop_oneof![
            4 => (op, inner.clone(), inner.clone())
                .prop_map(|(o, a, b)| E::Bin(o, Box::new(a), Box::new(b))),
            1 => inner.clone().prop_map(|a| E::Neg(Box::new(a))),
            1 => inner.clone().prop_map(|a| E::ToDouble(Box::new(a))),
            1 => inner.clone().prop_map(|a| E::ToBigint(Box::new(a))),
            1 => inner.clone().prop_map(|a| E::Abs(Box::new(a))),
            1 => (cmp, inner.clone(), inner.clone(), inner.clone(), inner)
                .prop_map(|(c, l, r, a, b)| E::Case(c, Box::new(l), Box::new(r), Box::new(a), Box::new(b))),
        ]
    })
}

type Columns = (
    Vec<Option<i64>>,
    Vec<Option<i64>>,
    Vec<Option<f64>>,
    Vec<Option<f64>>,
);

fn columns() -> impl Strategy<Value = Columns> {
    (0usize..80).prop_flat_map(|n| {
        let ic = || prop::collection::vec(prop::option::weighted(0.85, int_value()), n);
        let fc = || prop::collection::vec(prop::option::weighted(0.85, float_value()), n);
        (ic(), ic(), fc(), fc())
    })
}

fn same(got: Option<V>, want: Option<V>) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(V::I(a)), Some(V::I(b))) => a == b,
        (Some(V::F(a)), Some(V::F(b))) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arithmetic_matches_row_reference(e in expr(), (i0, i1, f0, f1) in columns()) {
        let n = i0.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("i0", DataType::Int64, true),
            Field::new("i1", DataType::Int64, true),
            Field::new("f0", DataType::Float64, true),
            Field::new("f1", DataType::Float64, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(i0.clone())),
            Arc::new(Int64Array::from(i1.clone())),
            Arc::new(Float64Array::from(f0.clone())),
            Arc::new(Float64Array::from(f1.clone())),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).expect("batch");
        let src = e.sql();
        let compiled = weir_expr::compile(&src, &schema)
            .map_err(|err| TestCaseError::fail(format!("{src}: {err}")))?;
        let out = compiled.evaluate(&batch)
            .map_err(|err| TestCaseError::fail(format!("{src}: {err}")))?;
        prop_assert_eq!(out.len(), n);
        let got: Vec<Option<V>> = if e.is_float() {
            prop_assert_eq!(out.data_type(), &DataType::Float64);
            out.as_primitive::<Float64Type>().iter().map(|v| v.map(V::F)).collect()
        } else {
            prop_assert_eq!(out.data_type(), &DataType::Int64);
            out.as_primitive::<Int64Type>().iter().map(|v| v.map(V::I)).collect()
        };
        for (i, g) in got.iter().enumerate() {
            let row = Row { ints: [&i0, &i1], floats: [&f0, &f1], i };
            let want = reference(&e, &row);
            prop_assert!(same(*g, want), "{} row {}: got {:?}, want {:?}", src, i, g, want);
        }
        // The same expression as a predicate on a sliced batch.
        if n > 2 {
            let pred = format!("{src} > 0");
            let p = weir_expr::compile_predicate(&pred, &schema).expect("predicate compiles");
            let mask = p.evaluate_predicate(&batch.slice(1, n - 2)).expect("predicate evaluates");
            prop_assert_eq!(mask.null_count(), 0);
            for (k, g) in got[1..n - 1].iter().enumerate() {
                let want = match g {
                    Some(V::I(v)) => *v > 0,
                    Some(V::F(v)) => *v > 0.0,
                    None => false,
                };
                prop_assert_eq!(mask.value(k), want, "{} row {}", pred, k + 1);
            }
        }
    }

    #[test]
    fn display_reparses_to_the_same_text(e in expr()) {
        let parsed = weir_expr::parse(&e.sql()).expect("generated SQL parses");
        let shown = parsed.to_string();
        let again = weir_expr::parse(&shown).expect("displayed SQL parses").to_string();
        prop_assert_eq!(shown, again);
    }
}
