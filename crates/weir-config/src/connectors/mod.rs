//! Sources and sinks in external systems: NATS JetStream, MQTT, Kafka and
//! PostgreSQL.
//!
//! Checking a connector touches nothing outside the file except its
//! credentials: passwords and tokens come from an environment variable or a
//! file, read here so that a missing one is reported by `weir validate`
//! with the variable or file named, never the value. Addresses are checked
//! for form only; whether the server answers is the engine's business.
//!
//! Each connector has one file holding its public config types, the form of
//! its source table and the checks of its source and sink; [`CONNECTORS`]
//! registers it by `type`. The shared parts are `credentials` (secrets),
//! `address` (URLs, `host:port`) and `at` (where a table's problems go).
//! Connector sinks share one table form, [`ConnectorSinkSpec`], so that a
//! misspelt key is answered with every key a connector sink may have; a
//! connector lists the ones it takes, and one whose sink takes a key no
//! other connector has adds it there too.
//!
//! These modules use `crate::check` and the pipeline types, never
//! `crate::validate`.

mod address;
mod at;
mod credentials;
mod kafka;
mod mqtt;
mod nats;
mod postgres;

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::check::Checker;
use crate::{SinkKind, SourceKind};
use at::At;

pub use credentials::{Credentials, Secret};
pub use kafka::{KafkaDelivery, KafkaSink, KafkaSource};
pub use mqtt::{MqttSink, MqttSource};
pub use nats::{NatsSink, NatsSource};
pub use postgres::PostgresSink;

/// What checking a connector needs besides its table.
pub(crate) struct Context<'a> {
    /// Directory relative paths resolve against.
    pub base_dir: &'a Path,
    /// The pipeline's name: the default consumer, client and group name.
    pub pipeline: &'a str,
    /// What is checked outside the file.
    pub checks: &'a crate::Checks<'a>,
}

/// Checks a source table of a connector's type: the source's name and
/// where it reads (`None` once a problem is reported).
type CheckSource =
    fn(&mut Checker<'_>, &Spanned<toml::Table>, &Context<'_>) -> Option<(String, SourceKind)>;

/// Checks the connector's keys of a sink table, reporting through `At`.
type CheckSink = fn(&mut At<'_, '_>, ConnectorSinkSpec, &Context<'_>) -> SinkKind;

/// A connector's sink: the keys of [`ConnectorSinkSpec`] it takes (besides
/// name, type, input, columns and credentials) and its check.
pub(crate) struct SinkChecks {
    keys: &'static [&'static str],
    check: CheckSink,
}

/// One connector, known by the `type` of its source and sink tables.
pub(crate) struct Connector {
    kind: &'static str,
    source: Option<CheckSource>,
    sink: Option<SinkChecks>,
}

/// Every connector.
const CONNECTORS: [Connector; 4] = [
    nats::CONNECTOR,
    mqtt::CONNECTOR,
    kafka::CONNECTOR,
    postgres::CONNECTOR,
];

fn connector(kind: &str) -> Option<&'static Connector> {
    CONNECTORS.iter().find(|c| c.kind == kind)
}

/// Whether sources of this type are connectors.
pub(crate) fn is_source(kind: &str) -> bool {
    connector(kind).is_some_and(|c| c.source.is_some())
}

/// Whether sinks of this type are connectors.
pub(crate) fn is_sink(kind: &str) -> bool {
    connector(kind).is_some_and(|c| c.sink.is_some())
}

/// Checks a connector source (the first source, `sources[0]`) of type
/// `kind`; `None` when `kind` is no connector source or a problem was
/// reported.
pub(crate) fn check_source(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    kind: &str,
    context: &Context<'_>,
) -> Option<(String, SourceKind)> {
    let check = connector(kind)?.source?;
    check(c, table, context)
}

/// The table of a connector sink, as written: the fields every sink has
/// and those of each connector (a connector rejects the ones it does not
/// take).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConnectorSinkSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub input: String,
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub brokers: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub max_in_flight: Option<i64>,
    #[serde(default)]
    pub qos: Option<i64>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub retain: Option<bool>,
    #[serde(default)]
    pub delivery: Option<String>,
    #[serde(default)]
    pub transactional_id: Option<String>,
    #[serde(default)]
    pub properties: Option<toml::Table>,
    #[serde(default)]
    pub create_table: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
}

impl ConnectorSinkSpec {
    /// The connector keys given, each with whether it is present.
    fn given(&self) -> [(&'static str, bool); 13] {
        [
            ("url", self.url.is_some()),
            ("brokers", self.brokers.is_some()),
            ("subject", self.subject.is_some()),
            ("topic", self.topic.is_some()),
            ("table", self.table.is_some()),
            ("max_in_flight", self.max_in_flight.is_some()),
            ("qos", self.qos.is_some()),
            ("client_id", self.client_id.is_some()),
            ("retain", self.retain.is_some()),
            ("delivery", self.delivery.is_some()),
            ("transactional_id", self.transactional_id.is_some()),
            ("properties", self.properties.is_some()),
            ("create_table", self.create_table.is_some()),
        ]
    }
}

/// Checks the connector fields of a sink at `path`; `None` when its type is
/// no connector sink or a problem was reported.
pub(crate) fn check_sink(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: ConnectorSinkSpec,
    context: &Context<'_>,
) -> Option<SinkKind> {
    let sink = connector(&s.kind)?.sink.as_ref()?;
    let mut at = At::new(c, path.to_string(), span.clone());
    // Fields that belong to other connector kinds.
    for (key, present) in s.given() {
        if present && !sink.keys.contains(&key) {
            at.bad(
                key,
                format!(
                    "`{key}` does not apply to {} sinks (they take {})",
                    s.kind,
                    sink.keys.join(", ")
                ),
            );
        }
    }
    let kind = (sink.check)(&mut at, s, context);
    at.ok.then_some(kind)
}
