//! Connector sources and sinks in pipeline files: what a valid one becomes,
//! and that each mistake is reported with its field and line, credentials
//! named by where they come from and never shown.

use std::path::Path;

use weir_config::{KafkaDelivery, SinkKind, SourceKind};

/// A pipeline with the given source and sink tables around one decode step.
fn pipeline(source: &str, sink: &str) -> String {
    format!(
        r#"name = "conn-test"

{source}

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
fields = [{{ name = "id", type = "u64" }}, {{ name = "v", type = "f64" }}]

{sink}
"#
    )
}

const NATS_SOURCE: &str = r#"[[sources]]
name = "events"
type = "nats"
url = "nats://127.0.0.1:4222"
stream = "EVENTS""#;

const FILE_SINK: &str = r#"[[sinks]]
name = "out"
type = "file"
input = "decode"
path = "out.jsonl""#;

fn problems(text: &str) -> Vec<String> {
    match weir_config::parse(text, Path::new("/tmp")) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(|p| p.to_string()).collect(),
    }
}

/// Asserts the text is rejected with a problem containing every needle.
fn rejected(text: &str, needles: &[&str]) {
    let got = problems(text);
    assert!(
        got.iter().any(|p| needles.iter().all(|n| p.contains(n))),
        "expected a problem with {needles:?}, got {got:?}"
    );
}

fn line_of(text: &str, needle: &str) -> String {
    let n = text
        .lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1;
    format!("line {n}:")
}

#[test]
fn valid_connectors_become_typed_settings() {
    let text = pipeline(
        r#"[[sources]]
name = "events"
type = "nats"
url = "nats://127.0.0.1:4222, nats://localhost:4223"
stream = "EVENTS"
subject = "events.>"
user = "weir"
password_env = "WEIR_TEST_NATS_PASSWORD""#,
        r#"[[sinks]]
name = "alerts"
type = "kafka"
input = "decode"
brokers = "127.0.0.1:9092"
topic = "alerts"
properties = { "linger.ms" = 5, "enable.idempotence" = true }"#,
    );
    std::env::set_var("WEIR_TEST_NATS_PASSWORD", "s3cret-value");
    let p = weir_config::parse(&text, Path::new("/tmp")).expect("valid");
    let SourceKind::Nats(n) = &p.source.kind else {
        panic!("not a NATS source: {:?}", p.source.kind)
    };
    assert_eq!(
        n.servers,
        vec!["nats://127.0.0.1:4222", "nats://localhost:4223"]
    );
    assert_eq!(n.stream, "EVENTS");
    assert_eq!(
        n.consumer, "conn-test",
        "durable name defaults to the pipeline's"
    );
    assert_eq!(n.subject.as_deref(), Some("events.>"));
    assert_eq!(n.credentials.user.as_deref(), Some("weir"));
    let password = n.credentials.password.as_ref().expect("password");
    assert_eq!(password.expose(), "s3cret-value");
    // Printing the pipeline never shows the value.
    let printed = format!("{p:?}");
    assert!(!printed.contains("s3cret-value"), "{printed}");
    assert!(printed.contains("environment variable WEIR_TEST_NATS_PASSWORD"));

    let SinkKind::Kafka(k) = &p.sinks[0].kind else {
        panic!("not a Kafka sink")
    };
    assert_eq!(k.delivery, KafkaDelivery::Transactional);
    assert_eq!(k.transactional_id, "conn-test-alerts");
    assert_eq!(
        k.properties,
        // In the file's order.
        vec![
            ("linger.ms".to_string(), "5".to_string()),
            ("enable.idempotence".to_string(), "true".to_string())
        ]
    );
    assert_eq!(p.sinks[0].columns, vec!["id", "v"]);
}

#[test]
fn mqtt_and_postgres_defaults() {
    let text = pipeline(
        r#"[[sources]]
name = "events"
type = "mqtt"
url = "mqtt://sensor@127.0.0.1"
topics = ["plant/+/temp", "plant/#"]
buffer = "data/mqtt""#,
        r#"[[sinks]]
name = "rows"
type = "postgres"
input = "decode"
url = "postgresql://postgres@127.0.0.1:5432/test"
table = "public.alerts""#,
    );
    let p = weir_config::parse(&text, Path::new("/base")).expect("valid");
    let SourceKind::Mqtt(m) = &p.source.kind else {
        panic!("not MQTT")
    };
    assert_eq!((m.host.as_str(), m.port, m.qos), ("127.0.0.1", 1883, 1));
    assert_eq!(m.client_id, "conn-test");
    assert_eq!(m.credentials.user.as_deref(), Some("sensor"));
    assert_eq!(m.log_dir, Path::new("/base/data/mqtt"));
    assert_eq!(m.stream, "events");
    assert_eq!(m.dedup_window, 0);
    let SinkKind::Postgres(pg) = &p.sinks[0].kind else {
        panic!("not PostgreSQL")
    };
    assert_eq!(
        (
            pg.host.as_str(),
            pg.port,
            pg.database.as_str(),
            pg.table.as_str()
        ),
        ("127.0.0.1", 5432, "test", "public.alerts")
    );
    assert!(pg.create_table);
    assert_eq!(pg.credentials.user.as_deref(), Some("postgres"));
}

#[test]
fn mistakes_name_the_field_and_line() {
    let cases: Vec<(String, &str, Vec<&str>)> = vec![
        (
            pipeline(
                &NATS_SOURCE.replace("nats://127.0.0.1:4222", "http://127.0.0.1:4222"),
                FILE_SINK,
            ),
            "url = ",
            vec!["sources[0].url", "unsupported scheme \"http\""],
        ),
        (
            pipeline(
                &NATS_SOURCE.replace("nats://127.0.0.1:4222", "nats://127.0.0.1:99999"),
                FILE_SINK,
            ),
            "url = ",
            vec!["sources[0].url", "invalid port \"99999\""],
        ),
        (
            pipeline(
                &NATS_SOURCE.replace("stream = \"EVENTS\"", "strem = \"EVENTS\""),
                FILE_SINK,
            ),
            "strem",
            vec!["sources[0].strem", "unknown field `strem`"],
        ),
        (
            pipeline(
                &format!(
                    "{NATS_SOURCE}\npassword_env = \"WEIR_TEST_UNSET_VARIABLE\"\nuser = \"u\""
                ),
                FILE_SINK,
            ),
            "password_env",
            vec![
                "sources[0].password_env",
                "environment variable WEIR_TEST_UNSET_VARIABLE is not set",
            ],
        ),
        (
            pipeline(
                &format!("{NATS_SOURCE}\ntoken_file = \"/nonexistent/weir-token\""),
                FILE_SINK,
            ),
            "token_file",
            vec![
                "sources[0].token_file",
                "cannot read /nonexistent/weir-token",
            ],
        ),
        (
            pipeline(
                r#"[[sources]]
name = "events"
type = "mqtt"
url = "mqtt://user:pw@127.0.0.1:1883"
topics = ["a"]
buffer = "b""#,
                FILE_SINK,
            ),
            "url = ",
            vec!["sources[0].url", "holds a password", "password_env"],
        ),
        (
            pipeline(
                r#"[[sources]]
name = "events"
type = "mqtt"
url = "mqtt://127.0.0.1"
topics = ["a/#/b"]
qos = 2
buffer = "b""#,
                FILE_SINK,
            ),
            "qos = 2",
            vec!["sources[0].qos", "must be 0 or 1, got 2"],
        ),
        (
            pipeline(
                r#"[[sources]]
name = "events"
type = "kafka"
brokers = "kafka://127.0.0.1:9092"
topic = "t""#,
                FILE_SINK,
            ),
            "brokers = ",
            vec!["sources[0].brokers", "without a scheme"],
        ),
        (
            pipeline(
                r#"[[sources]]
name = "events"
type = "kafka"
brokers = "127.0.0.1:9092"
topic = "t"
properties = { "sasl.password" = "x" }"#,
                FILE_SINK,
            ),
            "properties",
            vec!["sources[0].properties", "holds a credential"],
        ),
        (
            pipeline(
                NATS_SOURCE,
                r#"[[sinks]]
name = "rows"
type = "postgres"
input = "decode"
url = "postgres://postgres@127.0.0.1:5432"
table = "alerts""#,
            ),
            "url = \"postgres://",
            vec!["sinks[0].url", "names no database"],
        ),
        (
            pipeline(
                NATS_SOURCE,
                r#"[[sinks]]
name = "rows"
type = "postgres"
input = "decode"
url = "postgres://postgres@127.0.0.1/test"
table = "alerts; drop table x""#,
            ),
            "table = ",
            vec!["sinks[0].table", "not a plain table name"],
        ),
        (
            pipeline(
                NATS_SOURCE,
                r#"[[sinks]]
name = "out"
type = "nats"
input = "decode"
url = "nats://127.0.0.1"
topic = "x""#,
            ),
            "topic = ",
            vec!["sinks[0].topic", "does not apply to nats sinks"],
        ),
        (
            pipeline(
                NATS_SOURCE,
                r#"[[sinks]]
name = "out"
type = "kafka"
input = "decode"
brokers = "127.0.0.1:9092""#,
            ),
            "type = \"kafka\"",
            vec!["sinks[0].topic", "a kafka sink needs `topic`"],
        ),
        (
            pipeline(
                NATS_SOURCE,
                r#"[[sinks]]
name = "out"
type = "kafka"
input = "decode"
brokers = "127.0.0.1:9092"
topic = "t"
delivery = "exactly-once""#,
            ),
            "delivery = ",
            vec!["sinks[0].delivery", "unknown delivery \"exactly-once\""],
        ),
        (
            pipeline(
                NATS_SOURCE,
                r#"[[sinks]]
name = "out"
type = "mqtt"
input = "decode"
url = "mqtt://127.0.0.1"
topic = "alerts/#""#,
            ),
            "topic = ",
            vec!["sinks[0].topic", "may not contain wildcards"],
        ),
    ];
    for (text, at, mut needles) in cases {
        let line = line_of(&text, at);
        needles.push(&line);
        rejected(&text, &needles);
    }
}

#[test]
fn secrets_from_files_are_trimmed_and_not_printed() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pg-password"), "from-a-file\n").expect("write secret");
    let text = pipeline(
        NATS_SOURCE,
        r#"[[sinks]]
name = "rows"
type = "postgres"
input = "decode"
url = "postgres://weir@127.0.0.1/test"
table = "alerts"
password_file = "pg-password""#,
    );
    let p = weir_config::parse(&text, dir.path()).expect("valid");
    let SinkKind::Postgres(pg) = &p.sinks[0].kind else {
        panic!("not PostgreSQL")
    };
    let password = pg.credentials.password.as_ref().expect("password");
    assert_eq!(password.expose(), "from-a-file");
    assert!(!format!("{p:?}").contains("from-a-file"));
}
