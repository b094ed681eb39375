//! DOUBLE results must be bit-identical to the same IEEE operations written
//! in Rust (and so to a Python/NumPy reference): no reassociation, no fused
//! multiply-add, BIGINT → DOUBLE is `as f64`.

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use std::sync::Arc;

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn int(&mut self) -> i64 {
        match self.next() % 4 {
            0 => (self.next() % 2_000_000) as i64 - 1_000_000,
            1 => self.next() as i64,
            2 => (self.next() % 100_000_000_000) as i64,
            _ => (self.next() % 21) as i64 - 10,
        }
    }

    fn float(&mut self) -> f64 {
        match self.next() % 3 {
            0 => {
                f64::from_bits(self.next() >> 2)
                    * if self.next().is_multiple_of(2) {
                        1.0
                    } else {
                        -1.0
                    }
            }
            1 => (self.next() % 1_000_000) as f64 / 7.0 - 50_000.0,
            _ => ((self.next() % 2001) as f64 - 1000.0) * 0.001,
        }
    }
}

const ROWS: usize = 10_000;

/// A batch with columns x (Int64), a, s, c (Float64), and the same data as
/// plain vectors for the reference computations.
struct Data {
    batch: RecordBatch,
    x: Vec<Option<i64>>,
    a: Vec<Option<f64>>,
    s: Vec<Option<f64>>,
    c: Vec<Option<f64>>,
}

fn batch(seed: u64) -> Data {
    let mut r = Rng(seed);
    let nullable_int = |r: &mut Rng| (!r.next().is_multiple_of(10)).then(|| r.int());
    let x: Vec<Option<i64>> = (0..ROWS).map(|_| nullable_int(&mut r)).collect();
    let nullable_float = |r: &mut Rng| (!r.next().is_multiple_of(10)).then(|| r.float());
    let a: Vec<Option<f64>> = (0..ROWS).map(|_| nullable_float(&mut r)).collect();
    let s: Vec<Option<f64>> = (0..ROWS).map(|_| nullable_float(&mut r)).collect();
    let c: Vec<Option<f64>> = (0..ROWS)
        .map(|i| {
            if i % 97 == 0 {
                Some(0.0)
            } else {
                nullable_float(&mut r)
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("a", DataType::Float64, true),
        Field::new("s", DataType::Float64, true),
        Field::new("c", DataType::Float64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(x.clone())),
        Arc::new(Float64Array::from(a.clone())),
        Arc::new(Float64Array::from(s.clone())),
        Arc::new(Float64Array::from(c.clone())),
    ];
    Data {
        batch: RecordBatch::try_new(schema, cols).expect("batch"),
        x,
        a,
        s,
        c,
    }
}

fn eval(batch: &RecordBatch, src: &str) -> Vec<Option<f64>> {
    let e = weir_expr::compile(src, &batch.schema()).expect(src);
    let out = e.evaluate(batch).expect(src);
    out.as_primitive::<Float64Type>().iter().collect()
}

fn assert_bits(got: &[Option<f64>], want: &[Option<f64>], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = match (g, w) {
            (Some(g), Some(w)) => g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            (None, None) => true,
            _ => false,
        };
        assert!(same, "{what}: row {i}: got {g:?}, want {w:?}");
    }
}

/// Reference division with the engine's NULL-on-zero rule.
fn div(a: f64, b: f64) -> Option<f64> {
    (b != 0.0).then(|| a / b)
}

#[test]
fn cast_then_divide_matches_rust() {
    for seed in [1, 2, 3] {
        let Data { batch: b, x, .. } = batch(seed);
        let want: Vec<Option<f64>> = x.iter().map(|v| v.map(|v| (v as f64) / 10000.0)).collect();
        assert_bits(
            &eval(&b, "CAST(x AS DOUBLE) / 10000"),
            &want,
            "CAST(x AS DOUBLE) / 10000",
        );
        assert_bits(&eval(&b, "x / 10000.0"), &want, "x / 10000.0");
        assert_bits(&eval(&b, "x / 1e4"), &want, "x / 1e4");
    }
}

#[test]
fn nested_division_is_not_reassociated() {
    for seed in [4, 5] {
        let Data {
            batch: b,
            x,
            a,
            s,
            c,
        } = batch(seed);
        let want: Vec<Option<f64>> = a
            .iter()
            .zip(&s)
            .zip(&c)
            .map(|((a, s), c)| match (a, s, c) {
                (Some(a), Some(s), Some(c)) => div(*s, *c).and_then(|q| div(*a, q)),
                _ => None,
            })
            .collect();
        assert_bits(&eval(&b, "a / (s / c)"), &want, "a / (s / c)");
        // integer numerator converted first
        let want: Vec<Option<f64>> = x
            .iter()
            .zip(&s)
            .zip(&c)
            .map(|((x, s), c)| match (x, s, c) {
                (Some(x), Some(s), Some(c)) => div(*s, *c).and_then(|q| div(*x as f64, q)),
                _ => None,
            })
            .collect();
        assert_bits(&eval(&b, "x / (s / c)"), &want, "x / (s / c)");
    }
}

#[test]
fn multiply_add_is_not_fused() {
    let Data {
        batch: b, x, a, s, ..
    } = batch(6);
    let want: Vec<Option<f64>> = x
        .iter()
        .zip(&a)
        .zip(&s)
        .map(|((x, a), s)| match (x, a, s) {
            (Some(x), Some(a), Some(s)) => {
                let z = 0.37 * ((*x as f64) / 10000.0) + -1.25 * a + s * s - 0.1;
                Some(1.0 / (1.0 + (-z).exp()))
            }
            _ => None,
        })
        .collect();
    let src = "sigmoid(0.37 * (CAST(x AS DOUBLE) / 10000) + -1.25 * a + s * s - 0.1)";
    assert_bits(&eval(&b, src), &want, src);
    let src2 = "1 / (1 + exp(-(0.37 * (CAST(x AS DOUBLE) / 10000) + -1.25 * a + s * s - 0.1)))";
    assert_bits(&eval(&b, src2), &want, src2);
}

#[test]
fn threshold_comparison_matches_rust() {
    let Data { batch: b, x, .. } = batch(7);
    let e = weir_expr::compile_predicate("CAST(x AS DOUBLE) / 10000 > 0.5", &b.schema())
        .expect("compiles");
    let mask = e.evaluate_predicate(&b).expect("evaluates");
    let want: Vec<bool> = x
        .iter()
        .map(|v| v.is_some_and(|v| (v as f64) / 10000.0 > 0.5))
        .collect();
    assert_eq!(
        mask.iter().map(|v| v == Some(true)).collect::<Vec<_>>(),
        want
    );
}
