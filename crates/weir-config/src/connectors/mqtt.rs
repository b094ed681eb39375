//! MQTT: a source subscribing with a persistent session (each message made
//! durable in a log stream before it is acknowledged), and a sink
//! publishing each record to a topic.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::address::parse_url;
use super::at::At;
use super::credentials::{auth_of, Credentials};
use super::{Connector, ConnectorSinkSpec, Context, SinkChecks};
use crate::check::{resolve, Checker};
use crate::{SinkKind, SourceKind};

/// An MQTT source: subscribes with a persistent session and makes each
/// message durable in a stream of weir's log before acknowledging it; the
/// pipeline reads that stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSource {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic filters subscribed to.
    pub topics: Vec<String>,
    /// Subscription QoS: 0 or 1.
    pub qos: u8,
    /// Client id, which names the broker's persistent session (default: the
    /// pipeline's name).
    pub client_id: String,
    /// Log directory holding the stream of received messages.
    pub log_dir: PathBuf,
    /// Stream name in that directory (the source's name).
    pub stream: String,
    /// Drop a message whose topic and payload equal one of the last this
    /// many received (0: keep every message). QoS 1 delivers at least once;
    /// this removes the duplicates when payloads carry unique ids.
    pub dedup_window: usize,
    /// Credentials.
    pub credentials: Credentials,
}

/// An MQTT sink: publishes each record (JSON) to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSink {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Topic published to.
    pub topic: String,
    /// Publish QoS: 0 or 1.
    pub qos: u8,
    /// Client id (default: pipeline name, a dash and the sink's name).
    pub client_id: String,
    /// Publish with the retain flag.
    pub retain: bool,
    /// Credentials.
    pub credentials: Credentials,
}

pub(super) const CONNECTOR: Connector = Connector {
    kind: "mqtt",
    source: Some(check_source),
    sink: Some(SinkChecks {
        keys: &["url", "topic", "qos", "client_id", "retain"],
        check: check_sink,
    }),
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttSourceSpec {
    name: String,
    #[serde(rename = "type")]
    _kind: String,
    url: String,
    topics: Vec<String>,
    #[serde(default)]
    qos: Option<i64>,
    #[serde(default)]
    client_id: Option<String>,
    buffer: String,
    #[serde(default)]
    dedup_window: Option<i64>,
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
    let s: MqttSourceSpec = c.typed(&path, table)?;
    let mut at = At::new(c, path, table.span());
    let (host, port, user) = match parse_url(&s.url, &["mqtt", "tcp"], 1883) {
        Ok(u) => (u.host, u.port, u.user),
        Err(e) => {
            at.bad("url", e);
            (String::new(), 0, None)
        }
    };
    if s.topics.is_empty() {
        at.bad("topics", "give at least one topic filter");
    }
    for t in &s.topics {
        if let Err(e) = check_topic_filter(t) {
            at.bad("topics", e);
        }
    }
    let qos = qos(&mut at, s.qos);
    let client_id = s
        .client_id
        .clone()
        .unwrap_or_else(|| context.pipeline.to_string());
    at.nonempty("client_id", &client_id);
    let dedup_window = match s.dedup_window.unwrap_or(0) {
        n @ 0..=10_000_000 => n as usize,
        n => {
            at.bad(
                "dedup_window",
                format!("must be between 0 and 10000000, got {n}"),
            );
            0
        }
    };
    let mut auth = auth_of!(s);
    if auth.user.is_none() {
        auth.user = user;
    }
    let credentials = at.credentials(auth, context.base_dir);
    at.ok.then(|| {
        (
            s.name.clone(),
            SourceKind::Mqtt(MqttSource {
                host,
                port,
                topics: s.topics,
                qos,
                client_id,
                log_dir: resolve(context.base_dir, &s.buffer),
                stream: s.name,
                dedup_window,
                credentials,
            }),
        )
    })
}

fn check_sink(at: &mut At<'_, '_>, s: ConnectorSinkSpec, context: &Context<'_>) -> SinkKind {
    let url = at.required(&s.kind, "url", &s.url);
    let (host, port, user) = match parse_url(&url, &["mqtt", "tcp"], 1883) {
        Ok(u) => (u.host, u.port, u.user),
        Err(e) => {
            if !url.is_empty() {
                at.bad("url", e);
            }
            (String::new(), 0, None)
        }
    };
    let topic = at.required(&s.kind, "topic", &s.topic);
    if topic.contains(['+', '#']) {
        at.bad(
            "topic",
            "a publish topic may not contain wildcards ('+', '#')",
        );
    }
    let qos = qos(at, s.qos);
    let client_id = s
        .client_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", context.pipeline, s.name));
    let mut auth = auth_of!(s);
    if auth.user.is_none() {
        auth.user = user;
    }
    let credentials = at.credentials(auth, context.base_dir);
    SinkKind::Mqtt(MqttSink {
        host,
        port,
        topic,
        qos,
        client_id,
        retain: s.retain.unwrap_or(false),
        credentials,
    })
}

/// The QoS given (default 1); only 0 and 1 are supported.
fn qos(at: &mut At<'_, '_>, v: Option<i64>) -> u8 {
    match v.unwrap_or(1) {
        q @ (0 | 1) => q as u8,
        q => {
            at.bad("qos", format!("must be 0 or 1, got {q}"));
            1
        }
    }
}

/// Checks a subscription filter: `+` a whole level, `#` a whole last level.
fn check_topic_filter(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("topic filters must not be empty".into());
    }
    let levels: Vec<&str> = t.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err(format!("{t:?}: '#' must be a whole last level"));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("{t:?}: '+' must be a whole level"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn topic_filters() {
        assert!(check_topic_filter("a/+/b/#").is_ok());
        assert!(check_topic_filter("a/b#").is_err());
        assert!(check_topic_filter("a/#/b").is_err());
        assert!(check_topic_filter("a+/b").is_err());
    }

    /// The minimal pipeline reading an MQTT source with these lines after its
    /// `type`.
    fn source(lines: &str) -> String {
        patched(
            &minimal(),
            "type = \"memory\"",
            &format!("type = \"mqtt\"\n{lines}"),
        )
    }

    /// The minimal pipeline writing to an MQTT sink with these lines after its
    /// `input`.
    fn sink(lines: &str) -> String {
        patched(
            &minimal(),
            "type = \"discard\"\ninput = \"decode\"",
            &format!("type = \"mqtt\"\ninput = \"decode\"\n{lines}"),
        )
    }

    #[test]
    fn mqtt_source_problems() {
        check(&[
            case(
                "no buffer",
                source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]"),
                "sources[0]",
                Some("name = \"events\""),
                "missing field `buffer`",
            ),
            case(
                "URL that is not one",
                source("url = \"127.0.0.1:1883\"\ntopics = [\"a\"]\nbuffer = \"b\""),
                "sources[0].url",
                Some("url ="),
                "\"127.0.0.1:1883\" is not a URL (expected mqtt:// or tcp://host:port)",
            ),
            case(
                "no topics",
                source("url = \"mqtt://127.0.0.1\"\ntopics = []\nbuffer = \"b\""),
                "sources[0].topics",
                Some("topics ="),
                "give at least one topic filter",
            ),
            case(
                "empty topic filter",
                source("url = \"mqtt://127.0.0.1\"\ntopics = [\"\"]\nbuffer = \"b\""),
                "sources[0].topics",
                Some("topics ="),
                "topic filters must not be empty",
            ),
            case(
                "'#' before the last level",
                source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a/#/b\"]\nbuffer = \"b\""),
                "sources[0].topics",
                Some("topics ="),
                "\"a/#/b\": '#' must be a whole last level",
            ),
            case(
                "'+' in a level",
                source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a+/b\"]\nbuffer = \"b\""),
                "sources[0].topics",
                Some("topics ="),
                "\"a+/b\": '+' must be a whole level",
            ),
            case(
                "QoS 2",
                source("url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]\nqos = 2\nbuffer = \"b\""),
                "sources[0].qos",
                Some("qos ="),
                "must be 0 or 1, got 2",
            ),
            case(
                "empty client id",
                source(
                    "url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]\nclient_id = \"\"\nbuffer = \"b\"",
                ),
                "sources[0].client_id",
                Some("client_id ="),
                "must not be empty",
            ),
            case(
                "negative dedup window",
                source(
                    "url = \"mqtt://127.0.0.1\"\ntopics = [\"a\"]\nbuffer = \"b\"\ndedup_window = -1",
                ),
                "sources[0].dedup_window",
                Some("dedup_window ="),
                "must be between 0 and 10000000, got -1",
            ),
        ]);
    }

    #[test]
    fn mqtt_sink_problems() {
        check(&[
            case(
                "no topic",
                sink("url = \"mqtt://127.0.0.1\""),
                "sinks[0].topic",
                Some("type = \"mqtt\""),
                "a mqtt sink needs `topic`",
            ),
            case(
                "wildcard topic",
                sink("url = \"mqtt://127.0.0.1\"\ntopic = \"alerts/+\""),
                "sinks[0].topic",
                Some("topic ="),
                "a publish topic may not contain wildcards ('+', '#')",
            ),
            case(
                "invalid port",
                sink("url = \"mqtt://127.0.0.1:0\"\ntopic = \"alerts\""),
                "sinks[0].url",
                Some("url ="),
                "invalid port \"0\" in \"mqtt://127.0.0.1:0\"",
            ),
            case(
                "QoS 3",
                sink("url = \"mqtt://127.0.0.1\"\ntopic = \"alerts\"\nqos = 3"),
                "sinks[0].qos",
                Some("qos ="),
                "must be 0 or 1, got 3",
            ),
            case(
                "key of another connector",
                sink("url = \"mqtt://127.0.0.1\"\ntopic = \"alerts\"\nsubject = \"s\""),
                "sinks[0].subject",
                Some("subject ="),
                "`subject` does not apply to mqtt sinks (they take url, topic, qos, client_id, retain)",
            ),
        ]);
    }

    #[test]
    fn mqtt_sink_is_read() {
        let p = parse(&sink(
            "url = \"tcp://sensor@[::1]:1884\"\ntopic = \"alerts\"\nqos = 0\nretain = true",
        ))
        .expect("valid");
        assert_eq!(
            p.sinks[0].kind,
            crate::SinkKind::Mqtt(crate::MqttSink {
                host: "::1".into(),
                port: 1884,
                topic: "alerts".into(),
                qos: 0,
                client_id: "cases-out".into(),
                retain: true,
                credentials: crate::Credentials {
                    user: Some("sensor".into()),
                    password: None,
                    token: None,
                },
            })
        );
    }
}
