//! Rough throughput check, ignored by default (timings are meaningless in
//! debug builds). Run with:
//! `cargo test --release -p weir-expr --test throughput -- --ignored --nocapture`

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;
use std::time::Instant;

const ROWS: usize = 4096;
const BATCHES: usize = 2000;

fn batch(nulls: bool) -> RecordBatch {
    let amount: Vec<Option<i64>> = (0..ROWS as i64)
        .map(|i| (!nulls || i % 101 != 0).then_some((i * 7919) % 200_001 - 100_000))
        .collect();
    let a: Vec<f64> = (0..ROWS).map(|i| i as f64 * 0.5 + 1.0).collect();
    let b: Vec<f64> = (0..ROWS).map(|i| (i % 97) as f64 + 3.0).collect();
    let c: Vec<f64> = (0..ROWS).map(|i| (i % 13) as f64 + 1.0).collect();
    let merchant: Vec<&str> = (0..ROWS)
        .map(|i| ["acme", "globex", "initech"][i % 3])
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("amount_cents", DataType::Int64, true),
        Field::new("a", DataType::Float64, false),
        Field::new("b", DataType::Float64, false),
        Field::new("c", DataType::Float64, false),
        Field::new("merchant", DataType::Utf8, false),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(amount)),
        Arc::new(Float64Array::from(a)),
        Arc::new(Float64Array::from(b)),
        Arc::new(Float64Array::from(c)),
        Arc::new(StringArray::from(merchant)),
    ];
    RecordBatch::try_new(schema, cols).expect("batch")
}

#[test]
#[ignore = "timing; run explicitly in release mode"]
fn throughput() {
    for nulls in [false, true] {
        let batch = batch(nulls);
        for src in [
            "amount_cents > 0",
            "CAST(amount_cents AS DOUBLE) / 10000",
            "a / (b / c)",
            "amount_cents * 3 + 7",
            "amount_cents > 0 AND merchant <> 'globex'",
            "merchant LIKE 'ac%'",
            "sigmoid(0.37 * (CAST(amount_cents AS DOUBLE) / 10000) - 1.25 * a / (b / c))",
            "CASE WHEN amount_cents > 0 THEN a ELSE b END",
        ] {
            let e = weir_expr::compile(src, &batch.schema()).expect(src);
            let start = Instant::now();
            for _ in 0..BATCHES {
                std::hint::black_box(e.evaluate(&batch).expect(src));
            }
            let secs = start.elapsed().as_secs_f64();
            let rate = (ROWS * BATCHES) as f64 / secs / 1e6;
            println!("nulls={nulls:<5} {rate:>8.1} M rows/s  {src}");
        }
    }
}
