//! Kafka: a source reading every partition of a topic (offsets kept in
//! checkpoints), and a sink producing to a topic, transactionally or
//! idempotently.

use serde::Deserialize;
use toml::Spanned;

use super::address::host_port;
use super::at::At;
use super::credentials::{auth_of, Credentials};
use super::{Connector, ConnectorSinkSpec, Context, SinkChecks};
use crate::check::Checker;
use crate::{SinkKind, SourceKind};

/// A Kafka source: every partition of one topic, assigned by weir, with
/// offsets kept in checkpoints and committed to the consumer group for
/// visibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// Bootstrap servers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic read.
    pub topic: String,
    /// Consumer group offsets are committed to (default: the pipeline's
    /// name).
    pub group_id: String,
    /// Further librdkafka properties, as given.
    pub properties: Vec<(String, String)>,
    /// SASL credentials.
    pub credentials: Credentials,
}

/// How a Kafka sink keeps replays out of its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaDelivery {
    /// Each epoch in one Kafka transaction; after a restart the records
    /// already committed past the checkpoint are read back and skipped.
    Transactional,
    /// Idempotent producer, record key = output id: replays may appear
    /// twice in the topic, with the same key (compaction or consumers
    /// remove them).
    Idempotent,
}

/// A Kafka sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSink {
    /// Bootstrap servers, `host:port` separated by commas.
    pub brokers: String,
    /// The topic written.
    pub topic: String,
    /// Transactional or idempotent.
    pub delivery: KafkaDelivery,
    /// `transactional.id` (default: pipeline name, a dash and the sink's
    /// name).
    pub transactional_id: String,
    /// Further librdkafka properties, as given.
    pub properties: Vec<(String, String)>,
    /// SASL credentials.
    pub credentials: Credentials,
}

pub(super) const CONNECTOR: Connector = Connector {
    kind: "kafka",
    source: Some(check_source),
    sink: Some(SinkChecks {
        keys: &[
            "brokers",
            "topic",
            "delivery",
            "transactional_id",
            "properties",
        ],
        check: check_sink,
    }),
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSourceSpec {
    name: String,
    #[serde(rename = "type")]
    _kind: String,
    brokers: String,
    topic: String,
    #[serde(default)]
    group_id: Option<String>,
    #[serde(default)]
    properties: Option<toml::Table>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
    #[serde(default)]
    token_env: Option<String>,
    #[serde(default)]
    token_file: Option<String>,
}

fn check_source(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    context: &Context<'_>,
) -> Option<(String, SourceKind)> {
    let path = "sources[0]".to_string();
    let s: KafkaSourceSpec = c.typed(&path, table)?;
    let mut at = At::new(c, path, table.span());
    kafka_brokers(&mut at, &s.brokers);
    at.nonempty("topic", &s.topic);
    let properties = properties(&mut at, s.properties);
    let credentials = at.credentials(auth_of!(s), context.base_dir);
    at.ok.then(|| {
        (
            s.name,
            SourceKind::Kafka(KafkaSource {
                brokers: s.brokers,
                topic: s.topic,
                group_id: s.group_id.unwrap_or_else(|| context.pipeline.to_string()),
                properties,
                credentials,
            }),
        )
    })
}

fn check_sink(at: &mut At<'_, '_>, s: ConnectorSinkSpec, context: &Context<'_>) -> SinkKind {
    let brokers = at.required(&s.kind, "brokers", &s.brokers);
    if !brokers.is_empty() {
        kafka_brokers(at, &brokers);
    }
    let topic = at.required(&s.kind, "topic", &s.topic);
    let delivery = match s.delivery.as_deref() {
        None | Some("transactional") => KafkaDelivery::Transactional,
        Some("idempotent") => KafkaDelivery::Idempotent,
        Some(other) => {
            at.bad(
                "delivery",
                format!(
                    "unknown delivery {other:?} (expected \"transactional\" or \"idempotent\")"
                ),
            );
            KafkaDelivery::Transactional
        }
    };
    let properties = properties(at, s.properties);
    let credentials = at.credentials(auth_of!(s), context.base_dir);
    SinkKind::Kafka(KafkaSink {
        brokers,
        topic,
        delivery,
        transactional_id: s
            .transactional_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", context.pipeline, s.name)),
        properties,
        credentials,
    })
}

/// Checks bootstrap servers: `host:port` separated by commas.
fn kafka_brokers(at: &mut At<'_, '_>, brokers: &str) {
    for b in brokers.split(',').map(str::trim) {
        if b.contains("://") {
            at.bad(
                "brokers",
                format!("{b:?}: give brokers as host:port, without a scheme"),
            );
        } else if !b.contains(':') {
            at.bad("brokers", format!("{b:?} has no port (host:port)"));
        } else if let Err(e) = host_port(b, 9092) {
            at.bad("brokers", format!("{e} in {b:?}"));
        }
    }
}

/// librdkafka properties as strings, in the file's order; credentials are
/// refused here (they have their own keys).
fn properties(at: &mut At<'_, '_>, t: Option<toml::Table>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in t.unwrap_or_default() {
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                at.bad(
                    "properties",
                    format!(
                        "property {k:?} must be a string, integer or boolean, got {}",
                        other.type_str()
                    ),
                );
                continue;
            }
        };
        if k.contains("password") || k.contains("secret") {
            at.bad(
                "properties",
                format!(
                    "property {k:?} holds a credential: give it with `password_env` or `password_file` instead"
                ),
            );
            continue;
        }
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests {
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
            case(
                "broker with a scheme",
                source("brokers = \"kafka://127.0.0.1:9092\"\ntopic = \"t\""),
                "sources[0].brokers",
                Some("brokers ="),
                "\"kafka://127.0.0.1:9092\": give brokers as host:port, without a scheme",
            ),
            case(
                "broker without a port",
                source("brokers = \"127.0.0.1:9092, kafka2\"\ntopic = \"t\""),
                "sources[0].brokers",
                Some("brokers ="),
                "\"kafka2\" has no port (host:port)",
            ),
            case(
                "broker with an invalid port",
                source("brokers = \"kafka1:http\"\ntopic = \"t\""),
                "sources[0].brokers",
                Some("brokers ="),
                "invalid port \"http\" in \"kafka1:http\"",
            ),
            case(
                "empty topic",
                source("brokers = \"127.0.0.1:9092\"\ntopic = \"\""),
                "sources[0].topic",
                Some("topic ="),
                "must not be empty",
            ),
            case(
                "property that is a list",
                source("brokers = \"127.0.0.1:9092\"\ntopic = \"t\"\nproperties = { \"bootstrap.servers\" = [\"a\"] }"),
                "sources[0].properties",
                Some("properties ="),
                "property \"bootstrap.servers\" must be a string, integer or boolean, got array",
            ),
            case(
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
}
