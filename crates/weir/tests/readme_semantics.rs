//! What the README states about event time, durations, window output,
//! floating-point aggregates and the shapes of dead letters, checked by
//! running `weir`: the worked example (`examples/readings`) must give
//! exactly the output and dead letters the README shows.

use std::path::Path;

mod common;

use common::weir;
use weir_test_support::repo_root;

/// The fenced blocks of README.md that follow `<!-- readings: NAME -->`,
/// by name.
fn readme_blocks() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- readings: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().expect("a fence after the marker");
        assert!(fence.starts_with("```"), "{name}: {fence}");
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        blocks.push((name.to_string(), body.join("\n") + "\n"));
    }
    blocks
}

fn block(name: &str) -> String {
    readme_blocks()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("README.md shows no {name}"))
        .1
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The example pipeline in a temporary directory, with `input` as its
/// readings and `edit` applied to its text.
fn example(input: &[u8], edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(repo_root().join("examples/readings/pipeline.toml"))
        .expect("example pipeline");
    std::fs::write(dir.path().join("pipeline.toml"), edit(text)).expect("write");
    std::fs::write(dir.path().join("readings.jsonl"), input).expect("write");
    dir
}

fn run(dir: &Path, args: &[&str]) {
    let args: Vec<&str> = ["run", "pipeline.toml"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    let out = weir(&args, dir);
    assert!(
        out.status.success(),
        "weir {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn dead_letter_stream(dir: &Path) -> Vec<String> {
    let mut reader = weir_log::TailReader::new(&dir.join("weir-data/log"), "dead-letters", 0);
    let end = reader.end_offset().expect("end");
    reader
        .read(0, end as usize)
        .expect("read")
        .into_iter()
        .map(|(_, r)| String::from_utf8(r).expect("UTF-8"))
        .collect()
}

#[test]
fn the_readme_example_gives_the_output_and_dead_letters_it_shows() {
    let input = std::fs::read(repo_root().join("examples/readings/readings.jsonl")).expect("input");
    assert_eq!(block("readings.jsonl").as_bytes(), input.as_slice());

    let dir = example(&input, |t| t);
    run(dir.path(), &[]);
    assert_eq!(
        read(dir.path(), "out/per_minute.jsonl"),
        block("out/per_minute.jsonl")
    );
    // Every line, exactly; their order across steps is not promised.
    let dead = read(dir.path(), "out/dead_letters.jsonl");
    assert!(dead.ends_with('\n'));
    assert_eq!(
        sorted_lines(&dead),
        sorted_lines(&block("out/dead_letters.jsonl"))
    );

    // In a log stream: one record per entry, the same objects.
    let dir = example(&input, |t| {
        t.replace(
            "path = \"out/dead_letters.jsonl\"",
            "log = \"weir-data/log\"\nstream = \"dead-letters\"",
        )
    });
    run(dir.path(), &[]);
    let mut entries = dead_letter_stream(dir.path());
    entries.sort();
    assert_eq!(entries, sorted_lines(&block("out/dead_letters.jsonl")));
}

#[test]
fn event_time_must_be_integer_milliseconds_and_bytes_that_are_not_utf8_have_no_text() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut input = Vec::new();
    input.extend_from_slice(b"\xff\xfe\n");
    input.extend_from_slice(b"{\"sensor\":\"s1\",\"celsius\":1,\"ts\":1.7e12}\n");
    input.extend_from_slice(b"{\"sensor\":\"s1\",\"celsius\":1,\"ts\":1700000000000.0}\n");
    input.extend_from_slice(b"{\"sensor\":\"s1\",\"celsius\":1,\"ts\":\"2023-11-14T22:13:20Z\"}\n");
    input.extend_from_slice(b"{\"sensor\":\"s1\",\"celsius\":1,\"ts\":1700000000000}\n");
    let dir = example(&input, |t| t);
    run(dir.path(), &[]);
    let reasons: Vec<(u64, String, bool)> = read(dir.path(), "out/dead_letters.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            (
                v["position"].as_u64().expect("position"),
                v["reason"].as_str().expect("reason").to_string(),
                v.get("text").is_some(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (0, "invalid UTF-8 at byte 0".to_string(), false),
            (
                1,
                "field `ts`: expected i64, found non-integer number 1.7e12".to_string(),
                true
            ),
            (
                2,
                "field `ts`: expected i64, found non-integer number 1700000000000.0".to_string(),
                true
            ),
            (
                3,
                "field `ts`: expected i64, found a string".to_string(),
                true
            ),
        ]
    );
    let not_utf8 = r#"{"step":"decode","position":0,"reason":"invalid UTF-8 at byte 0","bytes_base64":"//4="}"#;
    assert_eq!(
        read(dir.path(), "out/dead_letters.jsonl").lines().next(),
        Some(not_utf8)
    );
    assert!(
        readme.contains(&not_utf8.replace("\"position\":0", "\"position\":…")),
        "README.md shows a different entry for bytes that are not UTF-8"
    );
    assert!(readme.contains("``field `ts`: expected i64, found non-integer number\n1.7e12``"));
    // The one good record, in the window starting on its minute.
    assert_eq!(
        read(dir.path(), "out/per_minute.jsonl"),
        "{\"sensor\":\"s1\",\"window_start\":1699999980000,\"window_end\":1700000040000,\"readings\":1,\"mean_celsius\":1.0,\"_id\":12464151384102855930}\n"
    );
}

#[test]
fn durations_are_a_whole_number_and_a_unit() {
    let dir = example(b"", |t| t);
    let text = read(dir.path(), "pipeline.toml");
    let validate = |size: &str| {
        std::fs::write(
            dir.path().join("pipeline.toml"),
            text.replace("size = \"1m\"", &format!("size = {size}")),
        )
        .expect("write");
        let out = weir(&["validate", "pipeline.toml"], dir.path());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for ok in [
        "\"250ms\"",
        "\"90s\"",
        "\"5m\"",
        "\"5min\"",
        "\"1h\"",
        "\"5 s\"",
    ] {
        let (valid, err) = validate(ok);
        assert!(valid, "{ok}: {err}");
    }
    for bad in [
        "\"1.5s\"",
        "\"1m30s\"",
        "\"60\"",
        "\"-1s\"",
        "\"1M\"",
        "\"0s\"",
        "60000",
    ] {
        let (valid, err) = validate(bad);
        assert!(!valid, "{bad} accepted");
        assert!(
            err.contains("size") || err.contains("60000"),
            "{bad}: {err}"
        );
    }
}

/// Readings whose float sums depend on the order they are added in.
fn awkward_readings(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let magnitude = [1e-3, 0.1, 7.0, 1e6, 3e12][(x % 5) as usize];
        let celsius = (x >> 11) as f64 / (1u64 << 53) as f64 * magnitude;
        let sensor = x % 7;
        // Out of order by up to 900 ms, within the bound of 1 s.
        let ts = 1_700_000_000_000 + i * 250 - (x >> 40) % 900;
        out.extend_from_slice(
            format!("{{\"sensor\":\"s{sensor}\",\"celsius\":{celsius:?},\"ts\":{ts}}}\n")
                .as_bytes(),
        );
    }
    out
}

#[test]
fn float_sums_and_averages_do_not_depend_on_shards_or_batches() {
    let input = awkward_readings(3000);
    let window = |kind: &'static str, batch_rows: usize| {
        move |t: String| {
            let t = t.replace(
                "kind = \"tumbling\"\nsize = \"1m\"",
                &format!("kind = \"{kind}\"\nsize = \"1m\"\nslide = \"20s\""),
            );
            let t = if kind == "sliding" {
                t.replace("slide = \"20s\"\n", "")
            } else {
                t
            };
            let t = t.replace(
                "aggregates = { readings = \"count(*)\", mean_celsius = \"avg(celsius)\" }",
                "aggregates = { n = \"count(*)\", total = \"sum(celsius)\", mean = \"avg(celsius)\", sd = \"stddev(celsius)\" }",
            );
            t.replace(
                "name = \"readings\"\n",
                &format!("name = \"readings\"\n\n[settings]\nbatch_rows = {batch_rows}\n"),
            )
        }
    };
    for kind in ["hopping", "sliding"] {
        let mut results = Vec::new();
        for (shards, batch_rows) in [(1, 4096), (3, 1), (4, 7)] {
            let dir = example(&input, window(kind, batch_rows));
            run(dir.path(), &["--shards", &shards.to_string()]);
            let out = read(dir.path(), "out/per_minute.jsonl");
            assert!(
                read(dir.path(), "out/dead_letters.jsonl").is_empty(),
                "no dead letters expected"
            );
            results.push((shards, batch_rows, sorted_lines(&out)));
        }
        let (_, _, first) = &results[0];
        assert!(first.len() > 100, "{kind}: {} rows", first.len());
        for (shards, batch_rows, rows) in &results[1..] {
            assert!(
                rows == first,
                "{kind}: {shards} shards, batches of {batch_rows} differ from 1 shard"
            );
        }
    }
}
