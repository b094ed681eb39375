use crate::test_support::*;

/// The minimal pipeline reading a Kafka source with these lines after its
/// `type`.
fn source(lines: &str) -> String {
    patched(
        &minimal(),
        "type = \"memory\"",
        &format!("type = \"kafka\"\n{lines}"),
    )
}

/// The minimal pipeline writing to a Kafka sink with these lines after its
/// `input`.
fn sink(lines: &str) -> String {
    patched(
        &minimal(),
        "type = \"discard\"\ninput = \"decode\"",
        &format!("type = \"kafka\"\ninput = \"decode\"\n{lines}"),
    )
}

#[test]
fn kafka_source_problems() {
    check(&[
        source_case(
            "broker with a scheme",
            source("brokers = \"kafka://127.0.0.1:9092\"\ntopic = \"t\""),
            "sources[0].brokers",
            Some("brokers ="),
            "\"kafka://127.0.0.1:9092\": give brokers as host:port, without a scheme",
        ),
        source_case(
            "broker without a port",
            source("brokers = \"127.0.0.1:9092, kafka2\"\ntopic = \"t\""),
            "sources[0].brokers",
            Some("brokers ="),
            "\"kafka2\" has no port (host:port)",
        ),
        source_case(
            "broker with an invalid port",
            source("brokers = \"kafka1:http\"\ntopic = \"t\""),
            "sources[0].brokers",
            Some("brokers ="),
            "invalid port \"http\" in \"kafka1:http\"",
        ),
        source_case(
            "empty topic",
            source("brokers = \"127.0.0.1:9092\"\ntopic = \"\""),
            "sources[0].topic",
            Some("topic ="),
            "must not be empty",
        ),
        source_case(
            "property that is a list",
            source("brokers = \"127.0.0.1:9092\"\ntopic = \"t\"\nproperties = { \"bootstrap.servers\" = [\"a\"] }"),
            "sources[0].properties",
            Some("properties ="),
            "property \"bootstrap.servers\" must be a string, integer or boolean, got array",
        ),
        source_case(
            "property holding a credential",
            source("brokers = \"127.0.0.1:9092\"\ntopic = \"t\"\nproperties = { \"ssl.key.password\" = \"x\" }"),
            "sources[0].properties",
            Some("properties ="),
            "property \"ssl.key.password\" holds a credential: give it with `password_env` or `password_file` instead",
        ),
    ]);
}

#[test]
fn kafka_sink_problems() {
    check(&[
        case(
            "no brokers",
            sink("topic = \"t\""),
            "sinks[0].brokers",
            Some("type = \"kafka\""),
            "a kafka sink needs `brokers`",
        ),
        case(
            "unknown delivery",
            sink("brokers = \"127.0.0.1:9092\"\ntopic = \"t\"\ndelivery = \"at-most-once\""),
            "sinks[0].delivery",
            Some("delivery ="),
            "unknown delivery \"at-most-once\" (expected \"transactional\" or \"idempotent\")",
        ),
        case(
            "key of another connector",
            sink("brokers = \"127.0.0.1:9092\"\ntopic = \"t\"\nurl = \"kafka://x\""),
            "sinks[0].url",
            Some("url ="),
            "`url` does not apply to kafka sinks (they take brokers, topic, delivery, transactional_id, properties)",
        ),
    ]);
}

#[test]
fn kafka_source_is_read() {
    let p = parse(&source("brokers = \"k1:9092,k2:9093\"\ntopic = \"t\"\ngroup_id = \"g\"\nproperties = { \"fetch.min.bytes\" = 1 }"))
        .expect("valid");
    assert_eq!(
        p.source.kind,
        crate::SourceKind::Kafka(crate::KafkaSource {
            brokers: "k1:9092,k2:9093".into(),
            topic: "t".into(),
            group_id: "g".into(),
            properties: vec![("fetch.min.bytes".into(), "1".into())],
            credentials: crate::Credentials::default(),
        })
    );
    let p = parse(&sink("brokers = \"k1:9092\"\ntopic = \"t\"\ndelivery = \"idempotent\"\ntransactional_id = \"tx\""))
        .expect("valid");
    let crate::SinkKind::Kafka(k) = &p.sinks[0].kind else {
        panic!("not a Kafka sink")
    };
    assert_eq!(k.delivery, crate::KafkaDelivery::Idempotent);
    assert_eq!(k.transactional_id, "tx");
}
