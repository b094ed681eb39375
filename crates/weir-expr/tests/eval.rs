//! Evaluation semantics with exact expected values.

mod common;

use common::*;
use std::sync::Arc;

#[test]
fn integer_arithmetic_with_overflow_and_zero_division() {
    let max = i64::MAX;
    assert_eq!(ints("i + j"), vec![Some(3), Some(-5), None, None, Some(0)]);
    assert_eq!(
        ints("i - j"),
        vec![Some(-1), Some(-9), None, Some(max - 1), Some(0)]
    );
    assert_eq!(
        ints("i * j"),
        vec![Some(2), Some(-14), None, Some(max), Some(0)]
    );
    assert_eq!(ints("i * 2"), vec![Some(2), Some(-14), None, None, Some(0)]);
    assert_eq!(ints("i + 1"), vec![Some(2), Some(-6), None, None, Some(1)]);
    // truncation toward zero, remainder has the dividend's sign
    assert_eq!(
        ints("i / j"),
        vec![Some(0), Some(-3), None, Some(max), None]
    );
    assert_eq!(ints("i % j"), vec![Some(1), Some(-1), None, Some(0), None]);
    assert_eq!(
        ints("i / 2"),
        vec![Some(0), Some(-3), None, Some(max / 2), Some(0)]
    );
    assert_eq!(
        ints("i % 4"),
        vec![Some(1), Some(-3), None, Some(3), Some(0)]
    );
    assert_eq!(ints("i / 0"), vec![None; 5]);
    assert_eq!(ints("i % 0"), vec![None; 5]);
    assert_eq!(ints("mod(i, j)"), ints("i % j"));
    // i64::MIN edge cases
    assert_eq!(
        ints("m / -1"),
        vec![None, Some(1), Some(-5), None, Some(-2)]
    );
    assert_eq!(
        ints("m % -1"),
        vec![Some(0), Some(0), Some(0), None, Some(0)]
    );
    assert_eq!(ints("-m"), vec![None, Some(1), Some(-5), None, Some(-2)]);
    assert_eq!(ints("abs(m)"), vec![None, Some(1), Some(5), None, Some(2)]);
    assert_eq!(ints("m - 1"), vec![None, Some(-2), Some(4), None, Some(1)]);
    assert_eq!(
        ints("m / (j - 2)"),
        vec![None, None, Some(5), None, Some(-1)]
    );
}

#[test]
fn float_arithmetic_and_division_by_zero() {
    let max = i64::MAX as f64;
    assert_eq!(
        floats("i / 2.0"),
        vec![Some(0.5), Some(-3.5), None, Some(max / 2.0), Some(0.0)]
    );
    assert_eq!(
        floats("f / g"),
        vec![Some(3.0), None, Some(0.0), None, Some(-100.25)]
    );
    assert_eq!(floats("f / 0.0"), vec![None; 5]);
    assert_eq!(floats("f / 0"), vec![None; 5]);
    assert_eq!(floats("f / (g - g)"), vec![None; 5]);
    assert_eq!(floats("f % 0.0"), vec![None; 5]);
    assert_eq!(
        floats("f % 2"),
        vec![Some(1.5), Some(-0.0), Some(0.0), None, Some(0.25)]
    );
    assert_eq!(
        floats("f * g + 1"),
        vec![Some(1.75), None, Some(1.0), None, Some(-99.25)]
    );
    assert_eq!(
        floats("-f"),
        vec![Some(-1.5), Some(2.0), Some(-0.0), None, Some(-100.25)]
    );
    assert_eq!(
        floats("i + f"),
        vec![Some(2.5), Some(-9.0), None, None, Some(100.25)]
    );
}

#[test]
fn column_widening() {
    assert_eq!(
        ints("i32c"),
        vec![
            Some(1),
            Some(-2),
            None,
            Some(i64::from(i32::MAX)),
            Some(i64::from(i32::MIN))
        ]
    );
    assert_eq!(
        ints("u32c * 2"),
        vec![
            Some(2 * i64::from(u32::MAX)),
            Some(0),
            Some(2),
            None,
            Some(14)
        ]
    );
    assert_eq!(
        ints("u64c"),
        vec![Some(1), None, None, Some(5), Some(i64::MAX)]
    );
    assert_eq!(
        floats("f32c"),
        vec![
            Some(0.5),
            None,
            Some(1.25),
            Some(-3.0),
            Some(f64::from(0.1f32))
        ]
    );
    assert_eq!(bools("i32c > u32c"), vec![F, F, N, N, F]);
}

#[test]
fn comparisons() {
    assert_eq!(bools("i > 0"), vec![T, F, N, T, F]);
    assert_eq!(bools("0 < i"), vec![T, F, N, T, F]);
    assert_eq!(bools("i = j"), vec![F, F, N, F, T]);
    assert_eq!(bools("i <> j"), vec![T, T, N, T, F]);
    assert_eq!(bools("i != j"), vec![T, T, N, T, F]);
    assert_eq!(bools("i >= 1"), vec![T, F, N, T, F]);
    assert_eq!(bools("i <= 0"), vec![F, T, N, F, T]);
    // int vs double compares as double
    assert_eq!(bools("i < f"), vec![T, T, N, N, T]);
    assert_eq!(bools("i = 1.0"), vec![T, F, N, F, F]);
    assert_eq!(bools("s = 'apple'"), vec![T, F, N, F, F]);
    assert_eq!(bools("s < t"), vec![F, T, N, N, F]);
    assert_eq!(bools("b = TRUE"), vec![T, F, N, T, F]);
    assert_eq!(bools("b > c"), vec![N, N, N, T, F]);
    assert_eq!(bools("i = NULL"), vec![N; 5]);
}

#[test]
fn three_valued_logic_on_columns() {
    assert_eq!(bools("b AND c"), vec![N, F, N, F, F]);
    assert_eq!(bools("b OR c"), vec![T, N, N, T, T]);
    assert_eq!(bools("NOT b"), vec![F, T, N, F, T]);
    assert_eq!(bools("b AND NULL"), vec![N, F, N, N, F]);
    assert_eq!(bools("b OR NULL"), vec![T, N, N, T, N]);
    assert_eq!(bools("b AND TRUE"), vec![T, F, N, T, F]);
    assert_eq!(bools("b AND FALSE"), vec![F; 5]);
    assert_eq!(bools("b OR TRUE"), vec![T; 5]);
    assert_eq!(bools("NOT (b OR c)"), vec![F, N, N, F, F]);
}

/// Full 3x3 truth tables against a reference implementation.
#[test]
fn three_valued_truth_tables() {
    use arrow_array::{Array, BooleanArray, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    let vals = [Some(true), Some(false), None];
    let mut p = Vec::new();
    let mut q = Vec::new();
    for a in vals {
        for b in vals {
            p.push(a);
            q.push(b);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("p", DataType::Boolean, true),
        Field::new("q", DataType::Boolean, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(BooleanArray::from(p.clone())),
            Arc::new(BooleanArray::from(q.clone())),
        ],
    )
    .expect("batch");
    let and = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    let or = |a: Option<bool>, b: Option<bool>| match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    };
    let run = |src: &str| -> Vec<Option<bool>> {
        let e = weir_expr::compile(src, &schema).expect("compiles");
        let out = e.evaluate(&batch).expect("evaluates");
        arrow_array::cast::AsArray::as_boolean(&out)
            .iter()
            .collect()
    };
    let expect = |f: &dyn Fn(Option<bool>, Option<bool>) -> Option<bool>| -> Vec<Option<bool>> {
        p.iter().zip(&q).map(|(a, b)| f(*a, *b)).collect()
    };
    assert_eq!(run("p AND q"), expect(&and));
    assert_eq!(run("p OR q"), expect(&or));
    assert_eq!(run("NOT p AND q"), expect(&|a, b| and(a.map(|x| !x), b)));
    assert_eq!(run("NOT (p OR q)"), expect(&|a, b| or(a, b).map(|x| !x)));
    assert_eq!(
        run("p IS NULL OR q"),
        expect(&|a, b| or(Some(a.is_none()), b))
    );
    // predicate view: NULL -> false
    let e = weir_expr::compile_predicate("p AND q", &schema).expect("compiles");
    let mask = e.evaluate_predicate(&batch).expect("evaluates");
    assert_eq!(mask.null_count(), 0);
    let want: Vec<bool> = expect(&and).iter().map(|v| *v == Some(true)).collect();
    assert_eq!(
        mask.iter().map(|v| v == Some(true)).collect::<Vec<_>>(),
        want
    );
}

#[test]
fn is_null_in_between() {
    assert_eq!(bools("i IS NULL"), vec![F, F, T, F, F]);
    assert_eq!(bools("s IS NOT NULL"), vec![T, T, F, T, T]);
    assert_eq!(bools("NULL IS NULL"), vec![T; 5]);
    assert_eq!(bools("i IN (1, 0, 5)"), vec![T, F, N, F, T]);
    assert_eq!(bools("i IN (1, NULL)"), vec![T, N, N, N, N]);
    assert_eq!(bools("i NOT IN (1, NULL)"), vec![F, N, N, N, N]);
    assert_eq!(bools("i NOT IN (1, 2)"), vec![F, T, N, T, T]);
    assert_eq!(bools("i IN (j, 1)"), vec![T, F, N, F, T]);
    assert_eq!(bools("i IN (1.5, 1)"), vec![T, F, N, F, F]);
    assert_eq!(bools("s IN ('apple', '')"), vec![T, F, N, F, T]);
    assert_eq!(bools("b IN (FALSE)"), vec![F, T, N, F, T]);
    let many: Vec<String> = (100..140).map(|v| v.to_string()).collect();
    assert_eq!(
        bools(&format!("i + 100 IN ({}, 93)", many.join(", "))),
        vec![T, T, N, N, T]
    );
    assert_eq!(bools("i BETWEEN 0 AND 1"), vec![T, F, N, F, T]);
    assert_eq!(bools("i NOT BETWEEN 0 AND 1"), vec![F, T, N, T, F]);
    assert_eq!(bools("f BETWEEN g AND 2"), vec![T, N, F, N, F]);
    assert_eq!(bools("s BETWEEN 'a' AND 'c'"), vec![T, F, N, F, F]);
}

#[test]
fn like() {
    assert_eq!(bools("s LIKE 'a%'"), vec![T, F, N, F, F]);
    assert_eq!(bools("s LIKE '%an%'"), vec![F, T, N, F, F]);
    assert_eq!(bools("s LIKE '_____'"), vec![T, F, N, F, F]);
    assert_eq!(bools("s LIKE '%'"), vec![T, T, N, T, T]);
    assert_eq!(bools("s LIKE 'c%r%e'"), vec![F, F, N, T, F]);
    assert_eq!(bools("s NOT LIKE '%e'"), vec![F, T, N, F, T]);
    assert_eq!(bools("s LIKE t"), vec![F, F, N, N, T]);
    assert_eq!(bools("s LIKE t || '%'"), vec![T, F, N, N, T]);
    assert_eq!(bools("s LIKE NULL"), vec![N; 5]);
    assert_eq!(bools("'50%' LIKE '50\\%'"), vec![T; 5]);
}

#[test]
fn case_expressions() {
    assert_eq!(
        strs("CASE WHEN i > 0 THEN 'pos' WHEN i < 0 THEN 'neg' ELSE 'other' END"),
        s(&[
            Some("pos"),
            Some("neg"),
            Some("other"),
            Some("pos"),
            Some("other")
        ])
    );
    assert_eq!(
        ints("CASE WHEN i > 0 THEN i END"),
        vec![Some(1), None, None, Some(i64::MAX), None]
    );
    assert_eq!(
        strs("CASE i WHEN 1 THEN 'one' WHEN 0 THEN 'zero' END"),
        s(&[Some("one"), None, None, None, Some("zero")])
    );
    // first matching branch wins
    assert_eq!(
        ints("CASE WHEN i > 0 THEN 1 WHEN i > -100 THEN 2 END"),
        vec![Some(1), Some(2), None, Some(1), Some(2)]
    );
    // BIGINT and DOUBLE branches unify to DOUBLE
    assert_eq!(
        floats("CASE WHEN b THEN i ELSE f END"),
        vec![
            Some(1.0),
            Some(-2.0),
            Some(0.0),
            Some(i64::MAX as f64),
            Some(100.25)
        ]
    );
    assert_eq!(
        bools("CASE WHEN c THEN b ELSE NOT b END"),
        vec![F, T, N, F, F]
    );
    assert_eq!(ints("CASE WHEN TRUE THEN j ELSE i END"), ints("j"));
    assert_eq!(ints("CASE WHEN NULL THEN j ELSE 7 END"), vec![Some(7); 5]);
    assert_eq!(
        ints("nullif(j, 2)"),
        vec![None, None, Some(3), Some(1), Some(0)]
    );
}

#[test]
fn casts() {
    assert_eq!(
        ints("CAST(num AS BIGINT)"),
        vec![Some(12), Some(-7), None, None, None]
    );
    assert_eq!(
        floats("CAST(num AS DOUBLE)"),
        vec![Some(12.0), Some(-7.0), None, None, Some(1000.0)]
    );
    // ties to even, NULL when out of range
    assert_eq!(
        ints("CAST(f AS BIGINT)"),
        vec![Some(2), Some(-2), Some(0), None, Some(100)]
    );
    assert_eq!(ints("CAST(2.5 AS INT)"), vec![Some(2); 5]);
    assert_eq!(ints("CAST(1e19 AS BIGINT)"), vec![None; 5]);
    assert_eq!(
        ints("CAST(f * 1e300 * 1e300 AS BIGINT)"),
        vec![None, None, Some(0), None, None]
    );
    assert_eq!(ints("CAST('abc' AS BIGINT)"), vec![None; 5]);
    assert_eq!(
        strs("CAST(f AS VARCHAR)"),
        s(&[Some("1.5"), Some("-2"), Some("0"), None, Some("100.25")])
    );
    assert_eq!(
        strs("CAST(i AS TEXT)"),
        s(&[
            Some("1"),
            Some("-7"),
            None,
            Some("9223372036854775807"),
            Some("0")
        ])
    );
    assert_eq!(
        strs("CAST(b AS STRING)"),
        s(&[
            Some("true"),
            Some("false"),
            None,
            Some("true"),
            Some("false")
        ])
    );
    assert_eq!(
        ints("CAST(b AS BIGINT)"),
        vec![Some(1), Some(0), None, Some(1), Some(0)]
    );
    assert_eq!(bools("CAST(j AS BOOLEAN)"), vec![T, T, T, T, F]);
    assert_eq!(bools("CAST('yes' AS BOOL)"), vec![T; 5]);
    assert_eq!(bools("CAST(num AS BOOLEAN)"), vec![N; 5]);
    assert_eq!(
        floats("CAST(i AS DOUBLE PRECISION)"),
        floats("CAST(i AS REAL)")
    );
    assert_eq!(strs("CAST(1.0 / 0.0 AS VARCHAR)"), vec![None; 5]);
}

#[test]
fn string_functions() {
    assert_eq!(
        strs("lower(s)"),
        s(&[
            Some("apple"),
            Some("banana"),
            None,
            Some("cherry pie"),
            Some("")
        ])
    );
    assert_eq!(
        strs("UPPER(s)"),
        s(&[
            Some("APPLE"),
            Some("BANANA"),
            None,
            Some("CHERRY PIE"),
            Some("")
        ])
    );
    assert_eq!(strs("upper('straße')"), s(&[Some("STRASSE"); 5]));
    assert_eq!(
        ints("length(s)"),
        vec![Some(5), Some(6), None, Some(10), Some(0)]
    );
    assert_eq!(ints("char_length('héllo')"), vec![Some(5); 5]);
    assert_eq!(
        strs("substr(s, 2, 3)"),
        s(&[Some("ppl"), Some("ana"), None, Some("her"), Some("")])
    );
    assert_eq!(
        strs("substring(s, 3)"),
        s(&[Some("ple"), Some("nana"), None, Some("erry pie"), Some("")])
    );
    assert_eq!(strs("substr('hello', 0, 2)"), s(&[Some("h"); 5]));
    assert_eq!(strs("substr('hello', 1, -1)"), vec![None; 5]);
    assert_eq!(
        strs("s || '!'"),
        s(&[
            Some("apple!"),
            Some("Banana!"),
            None,
            Some("cherry pie!"),
            Some("!")
        ])
    );
    assert_eq!(
        strs("s || t"),
        s(&[Some("appleapp"), Some("Bananaan"), None, None, Some("")])
    );
    assert_eq!(
        strs("'n=' || i"),
        s(&[
            Some("n=1"),
            Some("n=-7"),
            None,
            Some("n=9223372036854775807"),
            Some("n=0")
        ])
    );
    assert_eq!(
        strs("concat(s, '-', t)"),
        s(&[
            Some("apple-app"),
            Some("Banana-an"),
            Some("-x"),
            Some("cherry pie-"),
            Some("-")
        ])
    );
    assert_eq!(
        strs("concat(j, '/', b)"),
        s(&[
            Some("2/true"),
            Some("2/false"),
            Some("3/"),
            Some("1/true"),
            Some("0/false")
        ])
    );
    assert_eq!(
        strs("replace(s, 'a', 'A')"),
        s(&[
            Some("Apple"),
            Some("BAnAnA"),
            None,
            Some("cherry pie"),
            Some("")
        ])
    );
    assert_eq!(bools("starts_with(s, 'ch')"), vec![F, F, N, T, F]);
    assert_eq!(bools("ends_with(s, t)"), vec![F, F, N, N, T]);
    assert_eq!(
        ints("strpos(s, 'an')"),
        vec![Some(0), Some(2), None, Some(0), Some(0)]
    );
    assert_eq!(ints("strpos('héllo', 'llo')"), vec![Some(3); 5]);
    assert_eq!(strs("trim('  x y  ')"), s(&[Some("x y"); 5]));
    assert_eq!(strs("ltrim('  x  ')"), s(&[Some("x  "); 5]));
    assert_eq!(strs("rtrim('  x  ')"), s(&[Some("  x"); 5]));
    assert_eq!(strs("'it''s'"), s(&[Some("it's"); 5]));
}

#[test]
fn numeric_functions() {
    let max = i64::MAX;
    assert_eq!(
        ints("abs(i)"),
        vec![Some(1), Some(7), None, Some(max), Some(0)]
    );
    assert_eq!(
        floats("abs(f)"),
        vec![Some(1.5), Some(2.0), Some(0.0), None, Some(100.25)]
    );
    assert_eq!(
        ints("sign(i)"),
        vec![Some(1), Some(-1), None, Some(1), Some(0)]
    );
    assert_eq!(
        floats("sign(f)"),
        vec![Some(1.0), Some(-1.0), Some(0.0), None, Some(1.0)]
    );
    assert_eq!(
        floats("sqrt(f)"),
        vec![
            Some(1.5f64.sqrt()),
            None,
            Some(0.0),
            None,
            Some(100.25f64.sqrt())
        ]
    );
    assert_eq!(
        floats("ln(f)"),
        vec![Some(1.5f64.ln()), None, None, None, Some(100.25f64.ln())]
    );
    assert_eq!(floats("log10(100)"), vec![Some(2.0); 5]);
    assert_eq!(floats("log(1000)"), vec![Some(3.0); 5]);
    assert_eq!(floats("log2(8)"), vec![Some(3.0); 5]);
    assert_eq!(floats("log(2, 8)"), vec![Some(8f64.ln() / 2f64.ln()); 5]);
    assert_eq!(floats("log(1, 8)"), vec![None; 5]);
    assert_eq!(floats("log(-2)"), vec![None; 5]);
    assert_eq!(floats("exp(0)"), vec![Some(1.0); 5]);
    assert_eq!(floats("cbrt(-27)"), vec![Some(-3.0); 5]);
    assert_eq!(floats("power(2, 10)"), vec![Some(1024.0); 5]);
    assert_eq!(floats("pow(-8, 1.0 / 3)"), vec![None; 5]);
    assert_eq!(floats("power(0, -1)"), vec![None; 5]);
    assert_eq!(floats("power(-2, 3)"), vec![Some(-8.0); 5]);
    assert_eq!(
        floats("floor(f)"),
        vec![Some(1.0), Some(-2.0), Some(0.0), None, Some(100.0)]
    );
    assert_eq!(
        floats("ceil(f)"),
        vec![Some(2.0), Some(-2.0), Some(0.0), None, Some(101.0)]
    );
    assert_eq!(floats("ceiling(-0.5)"), vec![Some(-0.0); 5]);
    assert_eq!(ints("floor(i)"), ints("i"));
    assert_eq!(
        floats("round(f)"),
        vec![Some(2.0), Some(-2.0), Some(0.0), None, Some(100.0)]
    );
    assert_eq!(floats("round(-2.5)"), vec![Some(-3.0); 5]);
    assert_eq!(
        floats("round(f, 1)"),
        vec![Some(1.5), Some(-2.0), Some(0.0), None, Some(100.3)]
    );
    assert_eq!(ints("round(1250, -2)"), vec![Some(1300); 5]);
    assert_eq!(
        ints("round(i, -1)"),
        vec![Some(0), Some(-10), None, None, Some(0)]
    );
    assert_eq!(floats("trunc(-2.7)"), vec![Some(-2.0); 5]);
    assert_eq!(floats("sigmoid(0)"), vec![Some(0.5); 5]);
    assert_eq!(
        floats("sigmoid(f)"),
        [Some(1.5), Some(-2.0), Some(0.0), None, Some(100.25)]
            .iter()
            .map(|v: &Option<f64>| v.map(|x| 1.0 / (1.0 + (-x).exp())))
            .collect::<Vec<_>>()
    );
    assert_eq!(floats("sqrt(NULL)"), vec![None; 5]);
}

#[test]
fn null_skipping_functions() {
    let max = i64::MAX;
    assert_eq!(
        ints("least(i, j)"),
        vec![Some(1), Some(-7), Some(3), Some(1), Some(0)]
    );
    assert_eq!(
        ints("greatest(i, j, 5)"),
        vec![Some(5), Some(5), Some(5), Some(max), Some(5)]
    );
    assert_eq!(
        floats("greatest(i, f)"),
        vec![
            Some(1.5),
            Some(-2.0),
            Some(0.0),
            Some(max as f64),
            Some(100.25)
        ]
    );
    assert_eq!(
        ints("least(i, NULL)"),
        vec![Some(1), Some(-7), None, Some(max), Some(0)]
    );
    assert_eq!(
        strs("greatest(s, t)"),
        s(&[
            Some("apple"),
            Some("an"),
            Some("x"),
            Some("cherry pie"),
            Some("")
        ])
    );
    assert_eq!(
        ints("coalesce(i, j)"),
        vec![Some(1), Some(-7), Some(3), Some(max), Some(0)]
    );
    assert_eq!(
        ints("coalesce(NULL, i, 42)"),
        vec![Some(1), Some(-7), Some(42), Some(max), Some(0)]
    );
    assert_eq!(
        strs("coalesce(s, t, 'none')"),
        s(&[
            Some("apple"),
            Some("Banana"),
            Some("x"),
            Some("cherry pie"),
            Some("")
        ])
    );
    assert_eq!(
        floats("coalesce(f, g, 0)"),
        vec![Some(1.5), Some(-2.0), Some(0.0), Some(2.0), Some(100.25)]
    );
    assert_eq!(bools("coalesce(c, b)"), vec![T, F, N, F, T]);
}

#[test]
fn constants_are_folded_and_broadcast() {
    assert_eq!(ints("1 + 2 * 3"), vec![Some(7); 5]);
    assert_eq!(ints("(1 + 2) * 3"), vec![Some(9); 5]);
    assert_eq!(ints("9223372036854775807 + 1"), vec![None; 5]);
    assert_eq!(ints("-9223372036854775808"), vec![Some(i64::MIN); 5]);
    assert_eq!(floats("7 / 2.0"), vec![Some(3.5); 5]);
    assert_eq!(ints("7 / 2"), vec![Some(3); 5]);
    assert_eq!(ints("-7 / 2"), vec![Some(-3); 5]);
    assert_eq!(ints("-7 % 3"), vec![Some(-1); 5]);
    assert_eq!(strs("'a' || 'b'"), s(&[Some("ab"); 5]));
    assert_eq!(bools("NULL"), vec![N; 5]);
    assert_eq!(bools("TRUE AND NULL"), vec![N; 5]);
    assert_eq!(bools("FALSE AND NULL"), vec![F; 5]);
    assert_eq!(bools("TRUE OR NULL"), vec![T; 5]);
    assert_eq!(bools("NOT NULL"), vec![N; 5]);
    assert_eq!(ints("NULL + 1"), vec![None; 5]);
    assert_eq!(ints("i * (2 * 3 - 5)"), ints("i"));
    assert_eq!(
        strs("CASE WHEN 1 > 0 THEN 'y' ELSE 'n' END"),
        s(&[Some("y"); 5])
    );
}

#[test]
fn empty_and_sliced_batches() {
    let b = batch();
    let e = weir_expr::compile("i * j + 1 > 0 AND s LIKE '%a%'", &b.schema()).expect("compiles");
    let empty = b.slice(0, 0);
    assert_eq!(e.evaluate(&empty).expect("evaluates").len(), 0);
    let c = weir_expr::compile("1 + 1", &b.schema()).expect("compiles");
    assert_eq!(c.evaluate(&empty).expect("evaluates").len(), 0);
    // Offsets: evaluating a slice equals slicing the full result.
    for src in [
        "i * j + 1",
        "b AND c",
        "b OR c",
        "s || t",
        "i IN (1, NULL)",
        "coalesce(i, j)",
        "CASE WHEN b THEN f ELSE g END",
        "s LIKE '%a%'",
    ] {
        let e = weir_expr::compile(src, &b.schema()).expect("compiles");
        let full = e.evaluate(&b).expect("evaluates");
        let part = e.evaluate(&b.slice(1, 3)).expect("evaluates");
        assert_eq!(&full.slice(1, 3), &part, "{src}");
    }
}

#[test]
fn batch_must_match_schema() {
    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let schema = Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let e = weir_expr::compile("b", &schema).expect("compiles");
    let wrong = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("b", DataType::Utf8, true),
            Field::new("a", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .expect("batch");
    let err = e.evaluate(&wrong).expect_err("type mismatch");
    assert!(matches!(err, weir_expr::ExprError::Evaluation { .. }));
    assert!(err.to_string().contains("column \"b\""), "{err}");
    let short = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .expect("batch");
    assert!(e.evaluate(&short).is_err());
}

#[test]
fn deep_nesting_within_limit_evaluates() {
    // 150 levels of nesting must compile and evaluate on a default-size
    // test thread stack (2 MiB) even in debug builds.
    let src = format!("{}i{}", "abs(".repeat(150), ")".repeat(150));
    assert_eq!(
        ints(&src),
        vec![Some(1), Some(7), None, Some(i64::MAX), Some(0)]
    );
    let chain = vec!["j"; 150].join(" + ");
    assert_eq!(
        ints(&chain),
        vec![Some(300), Some(300), Some(450), Some(150), Some(0)]
    );
}
