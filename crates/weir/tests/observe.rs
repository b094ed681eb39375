//! `weir run --metrics-address`: a running fraud pipeline scraped by a
//! Prometheus text-format parser of its own, its health endpoints through
//! every readiness state, and `weir top` / `weir tap` as a user runs them.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{append, get, get_with_token, start};
use weir_test_support::brokers::Broker;
use weir_test_support::net::free_port;
use weir_test_support::pipelines::{example_text, fraud_text_following_log};

use weir_engine::telemetry::names;
use weir_metrics::process;

/// One scrape, parsed: (metric name, labels) to value. Histograms appear
/// as their `_count` and `_sum`, each bucket by its `le`.
type Scrape = HashMap<(String, Vec<(String, String)>), f64>;

/// The token the metrics test's run has; the others have none, and a
/// token sent to an endpoint without one changes nothing.
const TOKEN: &str = "observe-test-token";

fn scrape(port: u16) -> Option<Scrape> {
    let (status, body) = get_with_token(port, "/metrics", TOKEN).ok()?;
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let mut out = Scrape::new();
    for s in parsed.samples {
        // Every weir series names its pipeline; the rest are `process_*`.
        assert_eq!(
            s.metric.starts_with("weir_"),
            s.labels.get("pipeline").is_some(),
            "{}",
            s.metric
        );
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "pipeline")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => {
                out.insert((s.metric, labels), v);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                for b in buckets {
                    let mut l = labels.clone();
                    l.push(("le".into(), b.less_than.to_string()));
                    l.sort();
                    out.insert((format!("{}_bucket", s.metric), l), b.count);
                }
            }
            prometheus_parse::Value::Summary(_) => panic!("no summaries expected"),
        }
    }
    Some(out)
}

/// The value of `name` with exactly these labels (besides `pipeline`).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    s.get(&(name.to_string(), want)).copied()
}

/// The `_sum` series of histogram `family`.
fn sum(family: &str) -> String {
    format!("{family}_sum")
}

/// Scrapes until `done` holds, or fails after `secs` with the last scrape.
fn scrape_until(port: u16, secs: u64, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = scrape(port) {
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s; last scrape: {:?}",
                s.iter()
                    .filter(|((n, _), _)| n.starts_with("weir_") && !n.ends_with("_bucket"))
                    .collect::<Vec<_>>()
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "{what}: no endpoint within {secs} s"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alerts(events: u64) -> f64 {
    weir_workloads::fraud_v1::alerts(events).len() as f64
}

#[test]
fn metrics_move_as_events_flow_and_the_cli_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        fraud_text_following_log(1024, 2, true),
    )
    .expect("write");
    append(dir.path(), 0, 20_000, &[b"{not json"]);
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).expect("write");
    let _run = start(
        dir.path(),
        &[
            "--metrics-address",
            &address,
            "--endpoint-token-file",
            "token",
        ],
    );

    let source = |s: &Scrape| {
        value(
            s,
            names::SOURCE_RECORDS_TOTAL,
            &[("source", "transactions")],
        )
    };
    let sink = |s: &Scrape| value(s, names::SINK_RECORDS_TOTAL, &[("sink", "alerts")]);
    let first = scrape_until(port, 120, "the first 20,001 records", |s| {
        source(s) == Some(20_001.0) && sink(s) == Some(alerts(20_000))
    });
    append(dir.path(), 20_000, 50_000, &[]);
    let second = scrape_until(port, 120, "the next 30,000 records", |s| {
        source(s) == Some(50_001.0)
            && sink(s) == Some(alerts(50_000))
            && value(
                s,
                names::LOG_CONSUMER_LAG_RECORDS,
                &[("stream", "transactions")],
            ) == Some(0.0)
    });

    // Per step, in and out, exactly.
    for (s, events) in [(&first, 20_000.0), (&second, 50_000.0)] {
        let step = |name: &str, dir: &str| {
            let family = match dir {
                "in" => names::STEP_RECORDS_IN_TOTAL,
                _ => names::STEP_RECORDS_OUT_TOTAL,
            };
            value(s, family, &[("step", name)])
        };
        assert_eq!(step("decode", "in"), Some(events + 1.0));
        assert_eq!(step("decode", "out"), Some(events));
        assert_eq!(step("score", "in"), Some(events));
        assert_eq!(step("score", "out"), Some(events));
        assert_eq!(step("over_threshold", "out"), sink(s));
        assert_eq!(
            value(
                s,
                names::DEAD_LETTERS_TOTAL,
                &[("step", "decode"), ("reason", "malformed")]
            ),
            Some(1.0)
        );
    }
    // Histograms count what flowed.
    let count = |s: &Scrape, name: &str, labels: &[(&str, &str)]| {
        value(s, &format!("{name}_count"), labels).unwrap_or(0.0)
    };
    let alerts_sink = [("sink", "alerts")];
    for name in [
        names::INGEST_TO_SINK_SECONDS,
        names::EVENT_TIME_TO_SINK_SECONDS,
        names::SINK_BATCH_RECORDS,
    ] {
        let (a, b) = (
            count(&first, name, &alerts_sink),
            count(&second, name, &alerts_sink),
        );
        assert!(a > 0.0 && b > a, "{name}: {a} then {b}");
    }
    // Each record's event-time lag is at least the newest event's.
    let newest_ms = weir_workloads::fraud_v1::encode_json(50_000)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).expect("event");
            v["ts"].as_i64().expect("ts")
        })
        .max()
        .expect("events");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let lag_sum = value(
        &second,
        &sum(names::EVENT_TIME_TO_SINK_SECONDS),
        &alerts_sink,
    )
    .expect("sum");
    let mean_lag = lag_sum / count(&second, names::EVENT_TIME_TO_SINK_SECONDS, &alerts_sink);
    assert!(
        mean_lag >= now - newest_ms as f64 / 1e3 - 60.0 && mean_lag <= now + 1.0,
        "mean event-time lag {mean_lag} s; newest event {newest_ms} ms"
    );
    // Latency histograms count records; the batch histogram counts batches.
    assert_eq!(
        count(&second, names::INGEST_TO_SINK_SECONDS, &alerts_sink),
        alerts(50_000)
    );
    assert_eq!(
        value(&second, &sum(names::SINK_BATCH_RECORDS), &alerts_sink),
        Some(alerts(50_000))
    );
    assert_eq!(
        value(
            &second,
            &sum(names::SOURCE_BATCH_RECORDS),
            &[("source", "transactions")]
        ),
        Some(50_001.0)
    );
    let model = second
        .keys()
        .find(|(n, _)| *n == format!("{}_count", names::MODEL_INFERENCE_SECONDS))
        .expect("model inference series")
        .1
        .clone();
    let model: Vec<(&str, &str)> = model
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(model.contains(&("model", "fraud_lr")) && model.contains(&("step", "score")));
    assert_eq!(
        value(&second, &sum(names::MODEL_BATCH_RECORDS), &model),
        Some(50_000.0)
    );
    assert!(
        count(&second, names::MODEL_INFERENCE_SECONDS, &model)
            > count(&first, names::MODEL_INFERENCE_SECONDS, &model)
    );
    // State, watermarks, checkpoints, the log, the process.
    let entries = |s: &Scrape| {
        (0..2)
            .map(|i| value(s, names::WINDOW_STATE_ENTRIES, &[("shard", &i.to_string())]))
            .sum::<Option<f64>>()
            .expect("state per shard")
    };
    assert!(entries(&first) > 0.0 && entries(&second) > entries(&first));
    assert!(value(&second, names::WATERMARK_LAG_SECONDS, &[("shard", "1")]).expect("lag") > 0.0);
    let completed = |s: &Scrape| {
        value(s, names::CHECKPOINTS_TOTAL, &[("outcome", "completed")]).expect("checkpoints")
    };
    assert!(completed(&first) >= 1.0 && completed(&second) > completed(&first));
    assert_eq!(
        value(&second, names::CHECKPOINTS_TOTAL, &[("outcome", "failed")]),
        Some(0.0)
    );
    assert!(value(&second, names::CHECKPOINT_SIZE_BYTES, &[]).expect("size") > 0.0);
    // One stall observed per completed checkpoint (a scrape may fall
    // between the two), each under a second.
    let stall = |suffix: &str| {
        value(
            &second,
            &format!("{}_{suffix}", names::CHECKPOINT_STALL_SECONDS),
            &[],
        )
        .expect("stall series")
    };
    let n = stall("count");
    assert!(
        n >= completed(&second) && n <= completed(&second) + 1.0,
        "{n}"
    );
    assert!(stall("sum") < stall("count"));
    assert!(value(&second, names::CHECKPOINT_AGE_SECONDS, &[]).expect("age") < 60.0);
    let log_size = |s: &Scrape| {
        value(s, names::LOG_SIZE_BYTES, &[("stream", "transactions")]).expect("log size")
    };
    assert!(log_size(&second) > log_size(&first));
    assert!(
        value(&second, process::PROCESS_CPU_SECONDS_TOTAL, &[]).expect("cpu")
            > value(&first, process::PROCESS_CPU_SECONDS_TOTAL, &[]).expect("cpu")
    );
    assert!(value(&second, process::PROCESS_RESIDENT_MEMORY_BYTES, &[]).expect("rss") > 1e6);
    assert_eq!(value(&second, names::READY, &[]), Some(1.0));
    assert_eq!(get(port, "/healthz"), Ok((200, "ok\n".into())));
    assert_eq!(get(port, "/readyz"), Ok((200, "ready\n".into())));

    // `weir top` shows the same totals.
    let top = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["top", &address, "--once", "--interval", "200ms"])
        .args(["--token-file", "token"])
        .current_dir(dir.path())
        .output()
        .expect("weir top");
    let shown = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&top.stderr)
    );
    for want in ["pipeline fraud-v1", "ready yes", "fraud_lr", "malformed"] {
        assert!(shown.contains(want), "weir top lacks {want:?}:\n{shown}");
    }
    let total = |row: &str| -> Option<String> {
        let line = shown.lines().find(|l| l.starts_with(row))?;
        line[row.len()..]
            .split_whitespace()
            .next()
            .map(str::to_string)
    };
    assert_eq!(
        total("source transactions").as_deref(),
        Some("50,001"),
        "{shown}"
    );
    assert_eq!(
        total("step score out").as_deref(),
        Some("50,000"),
        "{shown}"
    );
    let alerts_total = alerts(50_000) as u64;
    assert_eq!(
        total("sink alerts").map(|t| t.replace(',', "")),
        Some(alerts_total.to_string()),
        "{shown}"
    );

    // `weir tap` prints records passing a step while they flow.
    let tap = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["tap", &address, "features", "--limit", "3", "--rate", "100"])
        .args(["--token-file", "token"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weir tap");
    std::thread::sleep(Duration::from_millis(300));
    append(dir.path(), 50_000, 60_000, &[]);
    let tapped = tap.wait_with_output().expect("tap ends at its limit");
    assert!(
        tapped.status.success(),
        "{}",
        String::from_utf8_lossy(&tapped.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&tapped.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert_eq!(l["_step"], "features");
        let txn = l["txn_id"].as_u64().expect("txn_id");
        assert!((50_000..60_000).contains(&txn), "{l}");
        assert!(
            l["win_count"].as_u64().is_some() && l.get("__pos").is_none(),
            "{l}"
        );
    }
    let unknown = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["tap", &address, "nope"])
        .env("WEIR_ENDPOINT_TOKEN", TOKEN)
        .output()
        .expect("weir tap");
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("unknown step \"nope\"") && err.contains("features"),
        "{err}"
    );
}

/// `/readyz` through its states in a real run: recovering while the sink
/// cannot open (a FIFO nobody reads yet), over the lag bound while the
/// sink is stuck and events keep coming, ready once it drains; `/healthz`
/// answers all along.
#[test]
fn readiness_goes_from_recovering_to_lagging_to_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("out")).expect("out");
    let fifo = dir.path().join("out/alerts.jsonl");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    std::fs::write(
        dir.path().join("pipeline.toml"),
        fraud_text_following_log(256, 2, false),
    )
    .expect("write");
    append(dir.path(), 0, 200_000, &[]);
    let port = free_port();
    let _run = start(
        dir.path(),
        &[
            "--metrics-address",
            &format!("127.0.0.1:{port}"),
            "--max-lag",
            "1000",
        ],
    );

    // Waits for an answer whose body starts with `want`.
    let readyz = |want: &str, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = get(port, "/readyz");
            if let Ok((_, body)) = &got {
                if body.starts_with(want) {
                    assert_eq!(get(port, "/healthz"), Ok((200, "ok\n".into())));
                    return got.expect("answer");
                }
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never said {want:?}: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Opening a FIFO for writing waits for a reader: the run is still
    // opening its sinks.
    assert_eq!(
        readyz("not ready: recovering", 60),
        (503, "not ready: recovering\n".into())
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        get(port, "/readyz"),
        Ok((503, "not ready: recovering\n".into()))
    );
    // A reader that reads nothing: the pipe fills, the sink stops, the
    // source stops behind it and the lag stays far over the bound.
    let reader = std::fs::File::open(&fifo).expect("open the FIFO");
    let (status, body) = readyz("not ready: consumer lag", 120);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: consumer lag ")
            && body.ends_with(" records is over the bound 1000\n"),
        "{body}"
    );
    assert!(!body.contains("recovering"), "{body}");
    let metrics = scrape(port).expect("scrape");
    assert_eq!(value(&metrics, names::READY, &[]), Some(0.0));
    // No `[checkpoint]`, no checkpoint series.
    let checkpoint_families = [
        names::CHECKPOINT_DURATION_SECONDS,
        names::CHECKPOINT_STALL_SECONDS,
        names::CHECKPOINT_SIZE_BYTES,
        names::CHECKPOINT_AGE_SECONDS,
        names::CHECKPOINTS_TOTAL,
    ];
    assert!(!metrics
        .keys()
        .any(|(n, _)| checkpoint_families.iter().any(|f| n.starts_with(f))));
    assert!(
        value(
            &metrics,
            names::LOG_CONSUMER_LAG_RECORDS,
            &[("stream", "transactions")]
        )
        .expect("lag")
            > 1000.0
    );
    // Draining the pipe lets everything through.
    let drain = std::thread::spawn(move || {
        let mut reader = reader;
        let mut sink = Vec::new();
        let _ = reader.read_to_end(&mut sink);
    });
    assert_eq!(readyz("ready", 120), (200, "ready\n".into()));
    assert_eq!(
        value(&scrape(port).expect("scrape"), names::READY, &[]),
        Some(1.0)
    );
    drop(_run);
    drain.join().expect("drained");
}

/// `/readyz` fails while the source's broker is away, and the connector
/// metrics say so; it recovers with the broker.
#[test]
#[ignore = "integration: needs the mosquitto binary"]
fn readiness_follows_the_source_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker_port = free_port();
    let text = example_text("pipeline-mqtt.toml").replace(
        "mqtt://127.0.0.1:1883",
        &format!("mqtt://127.0.0.1:{broker_port}"),
    );
    assert!(text.contains(&broker_port.to_string()));
    std::fs::write(dir.path().join("pipeline.toml"), text).expect("write");
    let mut broker = Some(Broker::mosquitto(
        dir.path(),
        broker_port,
        "allow_anonymous true",
    ));
    let port = free_port();
    let _run = start(
        dir.path(),
        &["--metrics-address", &format!("127.0.0.1:{port}")],
    );

    let up = |s: &Scrape| {
        value(
            s,
            names::CONNECTOR_UP,
            &[("connector", "transactions"), ("role", "source")],
        )
    };
    let readyz_is = |want: (u16, &str)| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = get(port, "/readyz");
            if got.as_ref().is_ok_and(|(s, b)| (*s, b.as_str()) == want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {want:?}: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    readyz_is((200, "ready\n"));
    assert_eq!(up(&scrape(port).expect("scrape")), Some(1.0));

    drop(broker.take());
    readyz_is((503, "not ready: source transactions is reconnecting\n"));
    let away = scrape(port).expect("scrape");
    assert_eq!(up(&away), Some(0.0));
    assert_eq!(value(&away, names::READY, &[]), Some(0.0));
    assert_eq!(get(port, "/healthz"), Ok((200, "ok\n".into())));

    broker = Some(Broker::mosquitto(
        dir.path(),
        broker_port,
        "allow_anonymous true",
    ));
    readyz_is((200, "ready\n"));
    let back = scrape(port).expect("scrape");
    assert_eq!(up(&back), Some(1.0));
    assert!(
        value(
            &back,
            names::CONNECTOR_RECONNECTS_TOTAL,
            &[("connector", "transactions"), ("role", "source")]
        )
        .expect("reconnects")
            >= 1.0
    );
    drop(broker);
}
