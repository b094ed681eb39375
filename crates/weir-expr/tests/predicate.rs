//! Filters on realistically sized batches (4096 rows), with and without
//! NULLs, and on sliced batches.

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

const ROWS: usize = 4096;

fn batch(with_nulls: bool) -> RecordBatch {
    let amount: Vec<Option<i64>> = (0..ROWS as i64)
        .map(|i| (!with_nulls || i % 7 != 0).then_some((i * 7919) % 20_001 - 10_000))
        .collect();
    let score: Vec<Option<f64>> = (0..ROWS)
        .map(|i| (!with_nulls || i % 11 != 3).then_some(i as f64 / ROWS as f64))
        .collect();
    let merchant: Vec<Option<&str>> = (0..ROWS)
        .map(|i| (!with_nulls || i % 13 != 5).then_some(["acme", "globex", "initech"][i % 3]))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("amount_cents", DataType::Int64, true),
        Field::new("score", DataType::Float64, true),
        Field::new("merchant", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(amount)),
        Arc::new(Float64Array::from(score)),
        Arc::new(StringArray::from(merchant)),
    ];
    RecordBatch::try_new(schema, cols).expect("batch")
}

fn reference(b: &RecordBatch, row: usize) -> bool {
    let amount = b
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("i64");
    let score = b
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    let merchant = b
        .column(2)
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("str");
    let a = amount.is_valid(row).then(|| amount.value(row));
    let s = score.is_valid(row).then(|| score.value(row));
    let m = merchant.is_valid(row).then(|| merchant.value(row));
    // (amount_cents > 0 AND score >= 0.25) OR merchant = 'acme', 3-valued
    let left = match (a.map(|a| a > 0), s.map(|s| s >= 0.25)) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    };
    let right = m.map(|m| m == "acme");
    matches!((left, right), (Some(true), _) | (_, Some(true)))
}

const SRC: &str = "(amount_cents > 0 AND score >= 0.25) OR merchant = 'acme'";

#[test]
fn predicate_on_4096_rows() {
    for with_nulls in [false, true] {
        let b = batch(with_nulls);
        let e = weir_expr::compile_predicate(SRC, &b.schema()).expect("compiles");
        let mask = e.evaluate_predicate(&b).expect("evaluates");
        assert_eq!(mask.len(), ROWS);
        assert_eq!(mask.null_count(), 0);
        let want: Vec<bool> = (0..ROWS).map(|r| reference(&b, r)).collect();
        let got: Vec<bool> = (0..ROWS).map(|r| mask.value(r)).collect();
        assert_eq!(got, want, "with_nulls={with_nulls}");
        let kept = got.iter().filter(|v| **v).count();
        assert!(kept > ROWS / 4 && kept < ROWS, "kept {kept}");
    }
}

#[test]
fn predicate_on_sliced_batch() {
    let b = batch(true);
    let e = weir_expr::compile_predicate(SRC, &b.schema()).expect("compiles");
    let (offset, len) = (13, 3001);
    let mask = e
        .evaluate_predicate(&b.slice(offset, len))
        .expect("evaluates");
    assert_eq!(mask.len(), len);
    for r in 0..len {
        assert_eq!(mask.value(r), reference(&b, offset + r), "row {r}");
    }
}

#[test]
fn simple_filters() {
    let b = batch(true);
    let count = |src: &str| {
        let e = weir_expr::compile_predicate(src, &b.schema()).expect(src);
        e.evaluate_predicate(&b).expect(src).true_count()
    };
    let amount = b
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("i64");
    let positive = amount.iter().filter(|v| v.is_some_and(|v| v > 0)).count();
    assert_eq!(count("amount_cents > 0"), positive);
    let non_positive = amount.iter().filter(|v| v.is_some_and(|v| v <= 0)).count();
    assert_eq!(count("NOT amount_cents > 0"), non_positive);
    assert_eq!(count("amount_cents IS NULL"), ROWS.div_ceil(7));
    assert_eq!(count("TRUE"), ROWS);
    assert_eq!(count("NULL"), 0);
    assert_eq!(
        count("merchant IN ('acme', 'initech') OR merchant IS NULL"),
        {
            let m = b
                .column(2)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("str");
            m.iter().filter(|v| v.is_none_or(|v| v != "globex")).count()
        }
    );
}
