//! Tests for weir-model: the fraud-v1 model against the reference formula,
//! batch sizes, float32 models, and the errors bad files and bad calls get.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use weir_model::{load_metadata, ModelError, ModelMetadata, OnnxModel};

const WEIGHTS: [f64; 5] = [0.8, 0.3, 0.5, 0.2, 1.5];
const BIAS: f64 = -40.0;
const THRESHOLD: f64 = 0.9;

fn fraud_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud/model")
}

fn fraud_path() -> PathBuf {
    fraud_dir().join("fraud_lr.onnx")
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn fraud_model() -> OnnxModel {
    OnnxModel::load(&fraud_path()).expect("fraud_lr.onnx loads")
}

/// The reference scorer, as fraud_v1_reference.py computes it.
fn reference_score(x: &[f64]) -> f64 {
    let mut z = BIAS;
    for (xi, wi) in x.iter().zip(WEIGHTS) {
        z += xi * wi;
    }
    1.0 / (1.0 + (-z).exp())
}

/// SplitMix64, as in fraud_v1_reference.py.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The features of every scored event of a fraud-v1 run of `n` events
/// (throughput mode), with their txn_ids: the reference pipeline's steps 1-3.
fn fraud_v1_features(n: u64) -> (Vec<u64>, Vec<f64>) {
    const BASE_TS: i64 = 1_700_000_000_000;
    const WINDOW_MS: i64 = 60_000;
    let mut rng = SplitMix64(42);
    let mut windows: HashMap<u64, VecDeque<(i64, i64)>> = HashMap::new();
    let mut txn_ids = Vec::new();
    let mut features = Vec::new();
    for i in 0..n {
        let r: [u64; 5] = std::array::from_fn(|_| rng.next());
        let mut amount = (r[2] % 100_000) as i64;
        if r[3].is_multiple_of(100) {
            amount *= 20;
        }
        let card = r[0] % 10_000;
        let ts = BASE_TS + i as i64;
        if amount <= 0 {
            continue;
        }
        let w = windows.entry(card).or_default();
        w.push_back((ts, amount));
        while w.front().is_some_and(|&(t, _)| t <= ts - WINDOW_MS) {
            w.pop_front();
        }
        let count = w.len() as i64;
        let total: i64 = w.iter().map(|&(_, a)| a).sum();
        let biggest = w.iter().map(|&(_, a)| a).max().unwrap_or(0);
        // Exact integers below 2^53, so each division rounds once, as
        // Python's int / int does.
        features.extend_from_slice(&[
            amount as f64 / 10_000.0,
            count as f64,
            total as f64 / 100_000.0,
            biggest as f64 / 10_000.0,
            amount as f64 / (total as f64 / count as f64),
        ]);
        txn_ids.push(i);
    }
    (txn_ids, features)
}

/// Feature rows spread over the interesting range of z (around 0, where
/// the score crosses 0.9, and far into both tails).
fn sample_rows(rows: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64(seed);
    let mut unit = move || (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(rows * 5);
    for _ in 0..rows {
        out.extend_from_slice(&[
            unit() * 200.0,
            (unit() * 20.0).floor() + 1.0,
            unit() * 100.0,
            unit() * 200.0,
            unit() * 20.0,
        ]);
    }
    out
}

fn assert_bit_exact(model: &OnnxModel, rows: usize, features: &[f64]) {
    let out = model.run(rows, features).expect("run");
    assert_eq!(out.len(), 1);
    let scores = &out[0];
    assert_eq!(scores.len(), rows);
    for (r, (row, got)) in features.chunks(5).zip(scores).enumerate() {
        let want = reference_score(row);
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "row {r} {row:?}: model {got:e}, reference {want:e}"
        );
    }
}

#[test]
fn fraud_model_signature() {
    let model = fraud_model();
    assert_eq!(model.input_width(), 5);
    assert_eq!(model.output_widths(), vec![1]);
    assert_eq!(model.output_names(), vec!["score".to_string()]);
    assert_eq!(model.path(), fraud_path().as_path());
}

#[test]
fn fraud_scores_match_reference_formula_bit_for_bit() {
    let model = fraud_model();
    #[rustfmt::skip]
    let rows = [
        0.0, 0.0, 0.0, 0.0, 0.0,
        1.0, 1.0, 0.1, 1.0, 1.0,
        5.0, 3.0, 1.5, 5.0, 2.5,
        19.998, 1.0, 1.9998, 19.998, 1.0,
        40.0, 2.0, 4.5, 40.0, 1.7,
        100.0, 12.0, 55.5, 150.0, 3.2,
        -3.0, 1.0, 2.0, 7.0, 0.25,
        1e6, 1.0, 1.0, 1.0, 1.0,
        -1e6, 1.0, 1.0, 1.0, 1.0,
    ];
    assert_bit_exact(&model, rows.len() / 5, &rows);
}

#[test]
fn fraud_batch_sizes() {
    let model = fraud_model();
    for (rows, seed) in [(1, 1), (7, 2), (4096, 3), (8192, 4)] {
        let features = sample_rows(rows, seed);
        assert_bit_exact(&model, rows, &features);
    }
}

#[test]
fn zero_rows_give_empty_outputs() {
    let model = fraud_model();
    assert_eq!(model.run(0, &[]).expect("run"), vec![Vec::<f64>::new()]);
}

/// The whole fraud-v1 1M-event workload through the model: every score
/// bit-identical to the reference formula, no alert decision flipped, and
/// the published alert count and checksum.
#[test]
fn fraud_v1_one_million_events() {
    let started = Instant::now();
    let (txn_ids, features) = fraud_v1_features(1_000_000);
    assert_eq!(txn_ids.len(), 999_988, "events kept");
    let generated = started.elapsed();

    let model = fraud_model();
    let started = Instant::now();
    let (mut differ, mut flips, mut alerts, mut checksum) = (0usize, 0usize, 0u64, 0u64);
    let mut max_diff = 0f64;
    // Sum of the scores' bit patterns (mod 2^64), to compare with the Python
    // reference's own scores. Not asserted: both sides call the platform's
    // libm exp, so the value is only portable between machines whose libms
    // agree. fraud_v1_reference.py on x86_64 glibc 2.36 gives 1780538091656234788.
    let mut score_bits = 0u64;
    for (ids, batch) in txn_ids.chunks(4096).zip(features.chunks(4096 * 5)) {
        let out = model.run(ids.len(), batch).expect("run");
        for ((id, row), got) in ids.iter().zip(batch.chunks(5)).zip(&out[0]) {
            let want = reference_score(row);
            score_bits = score_bits.wrapping_add(got.to_bits());
            if got.to_bits() != want.to_bits() {
                differ += 1;
                max_diff = max_diff.max((got - want).abs());
            }
            if (*got > THRESHOLD) != (want > THRESHOLD) {
                flips += 1;
            }
            if *got > THRESHOLD {
                alerts += 1;
                checksum = checksum.wrapping_add(*id);
            }
        }
    }
    eprintln!(
        "fraud-v1 1M: features {generated:?}, model {:?}; {differ} scores differ \
         (max {max_diff:e}), {flips} alert flips, score bit sum {score_bits}",
        started.elapsed()
    );
    assert_eq!(flips, 0, "alert decisions flipped");
    assert_eq!(
        differ, 0,
        "scores not bit-identical (max diff {max_diff:e})"
    );
    assert_eq!(alerts, 26_630);
    assert_eq!(checksum, 13_608_991_775);
}

#[test]
fn shared_across_threads() {
    let model = fraud_model();
    std::thread::scope(|s| {
        for seed in 0..4 {
            let model = model.clone();
            s.spawn(move || {
                let features = sample_rows(100, 100 + seed);
                assert_bit_exact(&model, 100, &features);
            });
        }
    });
}

#[test]
fn float32_model_with_two_outputs() {
    let model = OnnxModel::load(&data("tiny_f32.onnx")).expect("load");
    assert_eq!(model.input_width(), 3);
    assert_eq!(model.output_names(), vec!["y".to_string(), "s".to_string()]);
    assert_eq!(model.output_widths(), vec![2, 1]);

    // y = x @ [[1, 2], [3, 4], [5, 6]] + [0.5, -0.5], s = sum(x), exact in
    // f32 for the first two rows; 0.1 shows the rounding to f32.
    let features = [1.0, 2.0, 3.0, -1.0, 0.5, 0.25, 0.1, 0.0, 0.0];
    let out = model.run(3, &features).expect("run");
    assert_eq!(out.len(), 2);
    // The last row computes in f32: 0.1f32 + 0.5f32, rounded to f32.
    let x = 0.1f32;
    let (y0, y1) = ((x + 0.5) as f64, (2.0 * x - 0.5) as f64);
    assert_eq!(out[0], vec![22.5, 27.5, 2.25, 1.0, y0, y1]);
    assert_eq!(out[1], vec![6.0, -0.25, x as f64]);

    for rows in [1, 7, 4096] {
        let features: Vec<f64> = (0..rows * 3).map(|i| (i % 17) as f64 - 8.0).collect();
        let out = model.run(rows, &features).expect("run");
        assert_eq!(out[0].len(), rows * 2);
        assert_eq!(out[1].len(), rows);
        for (r, x) in features.chunks(3).enumerate() {
            assert_eq!(out[0][2 * r], x[0] + 3.0 * x[1] + 5.0 * x[2] + 0.5);
            assert_eq!(
                out[0][2 * r + 1],
                2.0 * x[0] + 4.0 * x[1] + 6.0 * x[2] - 0.5
            );
            assert_eq!(out[1][r], x[0] + x[1] + x[2]);
        }
    }
}

#[test]
fn fixed_batch_in_file_becomes_dynamic() {
    // Declared [1, 3]: load makes the batch dimension symbolic.
    let model = OnnxModel::load(&data("fixed_batch.onnx")).expect("load");
    assert_eq!(model.input_width(), 3);
    assert_eq!(model.output_widths(), vec![3]);
    let features: Vec<f64> = (0..12).map(f64::from).collect();
    assert_eq!(
        model.run(4, &features).expect("run"),
        vec![features.clone()]
    );
    assert_eq!(
        model.run(1, &features[..3]).expect("run"),
        vec![features[..3].to_vec()]
    );
}

// --- errors ---

fn load_err(path: &Path) -> ModelError {
    match OnnxModel::load(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_file() {
    let path = fraud_dir().join("no_such_model.onnx");
    let err = load_err(&path);
    assert!(matches!(err, ModelError::Load { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot load model {}: ", path.display())),
        "{msg}"
    );
}

#[test]
fn garbage_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let valid = std::fs::read(fraud_path()).expect("read model");
    let mut rng = SplitMix64(7);
    let random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.onnx", Vec::new()),
        ("text.onnx", b"this is not an onnx model\n".to_vec()),
        ("random.onnx", random),
        ("truncated.onnx", valid[..valid.len() / 2].to_vec()),
        ("tail.onnx", valid[valid.len() / 3..].to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        let err = load_err(&path);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{name}: {msg}");
        eprintln!("{name}: {msg}");
    }
    // a directory is not a model either
    let err = load_err(dir.path());
    assert!(matches!(err, ModelError::Load { .. }), "{err:?}");
}

#[test]
fn wrong_feature_count() {
    let model = fraud_model();
    let err = model.run(3, &[0.0; 12]).expect_err("12 values for 3 rows");
    assert!(matches!(
        err,
        ModelError::FeatureCount {
            width: 5,
            rows: 3,
            values: 12,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        format!(
            "model {}: expected 5 features per row, got 12 values for 3 rows",
            fraud_path().display()
        )
    );
    assert!(model.run(0, &[1.0]).is_err());
    assert!(model.run(usize::MAX, &[1.0]).is_err());
}

#[test]
fn rejected_signatures() {
    let cases = [
        (
            "rank3_input.onnx",
            "model input must be [N, F], found [3, 4, 5]",
        ),
        (
            "int_input.onnx",
            "model input must be f32 or f64, found I64",
        ),
        (
            "two_inputs.onnx",
            "model must have exactly one input, found 2",
        ),
        (
            "scalar_output.onnx",
            "model output 'total' must be [N] or [N, K]",
        ),
    ];
    for (name, want) in cases {
        let path = data(name);
        let err = load_err(&path);
        assert!(matches!(err, ModelError::Invalid { .. }), "{name}: {err:?}");
        let msg = err.to_string();
        let prefix = format!("invalid model {}: ", path.display());
        assert!(msg.starts_with(&prefix), "{name}: {msg}");
        assert!(msg.contains(want), "{name}: {msg}");
    }
}

// --- metadata ---

#[test]
fn fraud_metadata() {
    let meta = load_metadata(&fraud_dir()).expect("model.toml");
    assert_eq!(
        meta,
        ModelMetadata {
            name: "fraud-lr".into(),
            version: "1".into(),
            inputs: ["f_amount", "f_count", "f_sum", "f_max", "f_ratio"]
                .map(String::from)
                .to_vec(),
            outputs: vec!["score".into()],
        }
    );
    meta.check(&fraud_model()).expect("metadata fits the model");
    assert_eq!(meta.to_string(), "fraud-lr v1");
}

#[test]
fn metadata_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml_path = dir.path().join("model.toml");
    let err = load_metadata(dir.path()).expect_err("no model.toml");
    assert!(
        err.to_string().starts_with(&format!(
            "cannot read model metadata {}: ",
            toml_path.display()
        )),
        "{err}"
    );

    for (text, want) in [
        (
            "name = \"x\"\nversion = \"1\"\ninputs = [\"a\"]\n",
            "outputs",
        ),
        (
            "name = \"x\"\nversion = 1\ninputs = [\"a\"]\noutputs = [\"s\"]\n",
            "version",
        ),
        (
            "name = \"x\"\nversion = \"1\"\ninputs = []\noutputs = [\"s\"]\n",
            "`inputs` is empty",
        ),
        (
            "name = \"x\"\nversion = \"1\"\ninputs = [\"a\", \"a\"]\noutputs = [\"s\"]\n",
            "'a' twice",
        ),
        ("name = \n", "model.toml"),
    ] {
        std::fs::write(&toml_path, text).expect("write");
        let err = load_metadata(dir.path()).expect_err(text);
        assert!(err.to_string().contains(want), "{text:?}: {err}");
    }

    let meta = ModelMetadata {
        name: "x".into(),
        version: "1".into(),
        inputs: vec!["a".into()],
        outputs: vec!["score".into()],
    };
    let err = meta
        .check(&fraud_model())
        .expect_err("1 input name for 5 features");
    assert!(
        err.to_string()
            .contains("1 input names for a model taking 5 features per row"),
        "{err}"
    );
}

/// Per-batch run() time; meaningful in a release build:
/// `cargo test -p weir-model --release --test model -- --ignored --nocapture`
#[test]
#[ignore]
fn time_run_4096() {
    let model = fraud_model();
    for rows in [1usize, 64, 4096, 8192] {
        let features = sample_rows(rows, 9);
        let iters = (2_000_000 / rows).clamp(200, 20_000);
        for _ in 0..iters / 10 {
            model.run(rows, &features).expect("run");
        }
        let started = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(
                model
                    .run(rows, std::hint::black_box(&features))
                    .expect("run"),
            );
        }
        let per = started.elapsed() / iters as u32;
        eprintln!(
            "run({rows} rows): {per:?} per batch, {:.1} ns per row",
            per.as_nanos() as f64 / rows as f64
        );
    }
}
